"""A Hugging Face ``Trainer`` callback that records training into a vt study (``pip install -e ".[hf]"``)::

    trainer = Trainer(model=model, args=args, train_dataset=ds,
                      callbacks=[VtTrainerCallback("studies/mine", seed=0, every_steps=100)])

The step is ``state.global_step``; the initialisation is recorded at step 0. The Trainer logs after
a step's callbacks, so each checkpoint is held until the next one and takes the values logged at
its step (``scalars``: vt's name -> the logged name; default :data:`vt_core.external.callbacks.HF_SCALARS`).
Only the main process (``state.is_world_process_zero``) writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from transformers import TrainerCallback

from vt_core.external.callbacks import HF_SCALARS, pick
from vt_core.external.recorder import Recorder
from vt_core.runtime import Runtime


class VtTrainerCallback(TrainerCallback):
    def __init__(self, study, seed: int, *, scalars: Mapping[str, str] | None = None, **recorder_kwargs):
        self.study, self.seed, self.kwargs = study, seed, recorder_kwargs
        self.scalars = dict(HF_SCALARS if scalars is None else scalars)
        self.recorder: Recorder | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        runtime = self.kwargs.pop("runtime", None) or Runtime.from_env()
        runtime = dataclasses.replace(runtime, rank=0 if state.is_world_process_zero else max(1, args.process_index))
        self.recorder = Recorder(self.study, self.seed, model, runtime=runtime, hold=True, **self.kwargs)
        if self.recorder.resume_step is None and state.global_step == 0:
            self.recorder.step(0)

    def on_step_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.step(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.recorder is not None and logs:
            self.recorder.add_scalars(state.global_step, **pick(logs, self.scalars))

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
