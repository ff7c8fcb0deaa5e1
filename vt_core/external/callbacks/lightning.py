"""A PyTorch Lightning callback that records the fit into a vt study (``pip install -e ".[lightning]"``)::

    trainer = lightning.Trainer(callbacks=[VtCallback("studies/mine", seed=0, every_steps=100,
                                                      hooks=["net.1"], probe=probe_x)])

The step is ``trainer.global_step`` (optimizer steps); the initialisation is recorded at step 0.
Scalars come from what the LightningModule logs (``self.log("val_acc", ...)``), by the names in
``scalars`` (vt's name -> the logged name; default :data:`vt_core.external.callbacks.LIGHTNING_SCALARS`).
Only global rank 0 writes. A fit resumed from a Lightning checkpoint continues the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import lightning.pytorch as pl

from vt_core.external.callbacks import LIGHTNING_SCALARS, pick
from vt_core.external.recorder import Recorder
from vt_core.runtime import Runtime


class VtCallback(pl.Callback):
    def __init__(self, study, seed: int, *, scalars: Mapping[str, str] | None = None, **recorder_kwargs):
        self.study, self.seed, self.kwargs = study, seed, recorder_kwargs
        self.scalars = dict(LIGHTNING_SCALARS if scalars is None else scalars)
        self.recorder: Recorder | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        runtime = self.kwargs.pop("runtime", None) or Runtime.from_env()
        runtime = dataclasses.replace(runtime, rank=trainer.global_rank)
        self.recorder = Recorder(self.study, self.seed, pl_module, runtime=runtime, hold=True, **self.kwargs)
        if self.recorder.resume_step is None and trainer.global_step == 0:
            self.recorder.step(0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        rec = self.recorder
        step = trainer.global_step
        if rec is None or (rec.last_step is not None and step <= rec.last_step):
            return  # gradient accumulation: no optimizer step this batch
        rec.step(step, **pick(trainer.callback_metrics, self.scalars))

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.recorder is not None:  # validation after a step: its scalars join that step's checkpoint
            self.recorder.add_scalars(trainer.global_step, **pick(trainer.callback_metrics, self.scalars))

    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        if self.recorder is not None:
            self.recorder.close()

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        if self.recorder is not None:
            self.recorder.close(error=exception)
