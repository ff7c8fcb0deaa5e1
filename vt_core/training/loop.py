"""The training loop: yields a :class:`Checkpoint` on the schedule, resumes exactly.

Everything random is tied to the run's seed: the global torch RNG is seeded *before* the model is
built (initialisation), data come from the seed, and batches are drawn from a dedicated
``torch.Generator`` whose state is part of :meth:`Trainer.state_dict`. Restoring that state and
continuing gives bitwise the same arrays as an uninterrupted run (on CPU).
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vt_core.config.study_config import StudyConfig
from vt_core.data import Task, build_task
from vt_core.errors import VtError
from vt_core.models import build_model
from vt_core.models.hooks import capture, select_hookpoints, select_parameters
from vt_core.storage.run_store import Checkpoint  # noqa: F401 - re-exported: the trainer yields them
from vt_core.training.checkpoint_record import GLOBAL_RNG_LOCK, checkpoint_record, load_resume_state, resume_state
from vt_core.training.interrupt import check_stop
from vt_core.training.position import BatchPosition, ScheduleError, checkpoint_steps  # noqa: F401 - re-exported

_INIT_LOCK = GLOBAL_RNG_LOCK  # seeding + building a model, and restoring the RNG, never interleave


class DivergedError(VtError, RuntimeError):
    """The training loss became NaN or infinite."""

    def __init__(self, step: int, loss: float):
        super().__init__(f"training diverged at step {step}: loss={loss}")
        self.step = step


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if present, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def lr_lambda(cfg, total_steps: int):
    t = cfg.training
    if t.lr_schedule == "constant":
        return lambda step: 1.0
    warm, floor = t.warmup_steps, t.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_and_correct(loss_name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int):
    """Loss (mean) and number of correct predictions for class-index targets ``y``."""
    if loss_name == "hinge":  # one output; targets in {-1, +1}
        t = y.float() * 2 - 1
        margin = out.squeeze(-1) * t
        return torch.clamp(1 - margin, min=0).mean(), (margin > 0).sum()
    if loss_name == "mse":
        loss = F.mse_loss(out, F.one_hot(y, n_classes).float())
    else:
        loss = F.cross_entropy(out, y)
    return loss, (out.argmax(-1) == y).sum()


def per_example_loss(loss_name: str, out: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(n,) the loss of each example: the terms whose mean :func:`loss_and_correct` takes."""
    if loss_name == "hinge":
        return torch.clamp(1 - out.squeeze(-1) * (y.float() * 2 - 1), min=0)
    if loss_name == "mse":
        return F.mse_loss(out, F.one_hot(y, n_classes).float(), reduction="none").mean(-1)
    return F.cross_entropy(out, y, reduction="none")


def example_indices(n_train: int, n_test: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed examples of a study: ``n`` training and ``n`` held-out examples drawn once from the
    study's data seed, as (index in its split, split: 0 training, 1 held-out)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 90210]))
    tr = np.sort(rng.choice(n_train, size=n, replace=False))
    te = np.sort(rng.choice(n_test, size=n, replace=False))
    return np.concatenate([tr, te]).astype(np.int64), np.repeat(np.array([0, 1], dtype=np.int8), n)


def example_seed(config) -> int:
    """The seed of the study's fixed examples: the data seed (the same for every seed of the study)."""
    return int(getattr(config.data, "seed", None) or 0)


def example_batch(task, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fixed examples' inputs and targets (training ones first), or None when ``n`` is 0."""
    if not n:
        return None
    index, split = example_indices(len(task.y_train), len(task.y_test), n, seed)
    tr, te = torch.as_tensor(index[split == 0]), torch.as_tensor(index[split == 1])
    return (torch.cat([task.x_train[tr.to(task.x_train.device)], task.x_test[te.to(task.x_test.device)]]),
            torch.cat([task.y_train[tr.to(task.y_train.device)], task.y_test[te.to(task.y_test.device)]]))


@contextlib.contextmanager
def precision(name: str, device: torch.device):
    """``fp32`` (exact), ``tf32`` (TF32 matmuls on CUDA) or ``bf16`` (autocast) for the training step."""
    if name == "bf16":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
        return
    if name == "tf32" and device.type == "cuda":
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
        return
    yield


def _describe(err: BaseException) -> str:
    """One line for an error from torch.compile: dynamo wraps the backend's own error."""
    inner = getattr(err, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(err).__name__} from {type(inner).__name__}: {_first_line(inner)}"
    return f"{type(err).__name__}: {_first_line(err)}"


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else "(no message)"


class TrainStep:
    """A training step's forward and backward, under ``torch.compile`` where the config asks.

    ``fn(*args)`` returns the loss (a scalar, or one per seed of a group). Calling the step zeroes
    the gradients, runs ``fn`` under the configured precision, backpropagates the sum of its losses
    and returns them detached; the optimizer step is the caller's. With ``training.compile`` other
    than ``none`` the first call compiles ``fn`` (forward and backward, one graph per batch shape;
    ``reduce-overhead`` and ``max-autotune`` also record CUDA graphs on CUDA). If compiling or
    running the compiled step fails (an op dynamo or inductor cannot handle, no C++ compiler on a
    CPU, ...), the step is redone eagerly (nothing has been updated yet), a warning names the error,
    and this step stays eager from then on: a genuine error in the model is raised by the eager run.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], cfg, device: torch.device):
        self.eager, self.device = fn, device
        self.precision, self.mode = cfg.training.precision, cfg.training.compile
        self.compiled = None if self.mode == "none" else torch.compile(fn, mode=self.mode, dynamic=False)
        self.cudagraphs = device.type == "cuda" and self.mode in ("reduce-overhead", "max-autotune")
        self.failure: str | None = None  # why the compiled step was given up, if it was

    def _run(self, fn, optimizer: torch.optim.Optimizer, args) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with precision(self.precision, self.device):
            losses = fn(*args)
        losses.sum().backward()
        return losses.detach()

    def __call__(self, optimizer: torch.optim.Optimizer, *args) -> torch.Tensor:
        if self.compiled is not None:
            try:
                if self.cudagraphs:  # a new iteration: the previous step's graph outputs are dead
                    torch.compiler.cudagraph_mark_step_begin()
                losses = self._run(self.compiled, optimizer, args)
                return losses.clone() if self.cudagraphs else losses  # graph outputs are reused
            except Exception as err:  # noqa: BLE001 - redone eagerly below, which raises real errors
                self.compiled = None
                self.failure = _describe(err)
                warnings.warn(f"torch.compile (mode {self.mode!r}) failed on the training step ({self.failure}); "
                              f"training on without it. Set training.compile = \"none\" to skip the attempt.",
                              RuntimeWarning, stacklevel=2)
        return self._run(self.eager, optimizer, args)


def make_optimizer(cfg, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The configured optimizer over ``params`` (one model's, or a group's stacked tensors)."""
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    cls = torch.optim.Adam if o.name == "adam" else torch.optim.AdamW
    return cls(params, lr=o.lr, betas=(o.betas[0], o.betas[1]), weight_decay=o.weight_decay)


class Trainer:
    """One seed's training: yields a :class:`Checkpoint` at each point of the schedule
    (:meth:`run`) and gives its resume state (:meth:`state_dict`) between them."""

    def __init__(self, config: StudyConfig, seed: int):
        self.cfg, self.seed = config, seed
        self.device = resolve_device(config.training.device)
        task = build_task(config.data, seed)
        on_device: dict[str, Any] = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                                     for k, v in vars(task).items()}
        self.task = Task(**on_device)
        self.d_out = config.output_size(task.n_classes)
        # The global RNG is process-wide: seeds trained side by side in threads would interleave
        # their initialisations. Seeding and building happen under one lock, before anything else.
        with _INIT_LOCK:
            seed_everything(seed)  # before the model is built: initialisation follows the seed
            self.model = build_model(config.model, task, self.d_out).to(self.device)
        self.optimizer = self._make_optimizer()
        self._step = TrainStep(self._loss, config, self.device)
        self.position = BatchPosition(config, len(task.x_train), seed)  # the batch order follows the seed
        self.hooks = select_hookpoints(self.model, config.hooks.activations) if config.hooks.activations else []
        self.weight_names = select_parameters(self.model, config.hooks.weights)
        self.batch_size, self.batches_per_epoch = self.position.batch_size, self.position.batches_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, self.total_steps))
        self.probe_x = self.task.x_test[: config.hooks.probe_size]
        self.probe_y = self.task.y_test[: config.hooks.probe_size]
        self.examples = example_batch(self.task, config.hooks.per_example_loss, example_seed(config))
        # (sum of gradient norms, steps) since the last checkpoint; on the device: no sync per step
        self.grad_acc = torch.zeros(2, dtype=torch.float64, device=self.device)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer(self.cfg, list(self.model.parameters()))

    @property
    def total_steps(self) -> int:
        return self.position.total_steps

    @property
    def ckpt_steps(self) -> set[int] | None:
        return self.position.ckpt_steps

    @property
    def step(self) -> int:
        return self.position.step

    @property
    def n_checkpoints(self) -> int:
        return self.position.n_checkpoints

    @property
    def generator(self) -> torch.Generator:
        return self.position.generator

    @property
    def expected_checkpoints(self) -> int:
        """How many checkpoints a full run writes (the initialisation, the schedule, the last step)."""
        return self.position.expected_checkpoints

    # -- exact resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The resume state (:mod:`vt_core.training.checkpoint_record`) of where the seed stands now."""
        return resume_state(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                            scheduler=self.scheduler.state_dict(), at=self.position.mark(),
                            n_checkpoints=self.position.n_checkpoints, torch_rng=torch.get_rng_state(),
                            grad_acc=self.grad_acc.cpu().clone())

    def load_state_dict(self, state: dict) -> None:
        grad_acc = load_resume_state(state, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                     position=self.position)
        self.grad_acc = grad_acc.to(self.device).clone()

    # -- evaluation and capture -------------------------------------------------------------------

    @torch.no_grad()
    def _evaluate(self, x, y) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean loss, number correct, number of examples), in eval mode."""
        self.model.eval()
        loss, correct = loss_and_correct(self.cfg.training.loss, self.model(x), y, self.task.n_classes)
        self.model.train()
        return loss, correct, len(y)

    @torch.no_grad()
    def _activations(self) -> dict[str, np.ndarray]:
        if not self.hooks:
            return {}
        self.model.eval()
        with capture(self.model, self.hooks, self.cfg.hooks.capture) as out:
            self.model(self.probe_x)
        self.model.train()
        return {n: v.cpu().numpy() for n, v in out.items()}

    @torch.no_grad()
    def _example_losses(self) -> dict[str, np.ndarray]:
        if self.examples is None:
            return {}
        self.model.eval()
        loss = per_example_loss(self.cfg.training.loss, self.model(self.examples[0]), self.examples[1],
                                self.task.n_classes)
        self.model.train()
        return {"loss": loss.float().cpu().numpy()}

    @torch.no_grad()
    def checkpoint(self) -> Checkpoint:
        """Record the seed where it stands (:func:`vt_core.training.checkpoint_record.checkpoint_record`)."""
        train = self._evaluate(self.task.x_train, self.task.y_train)
        test = self._evaluate(self.task.x_test, self.task.y_test)
        params = dict(self.model.named_parameters())
        weights = {n: params[n].detach().cpu().numpy().copy() for n in self.weight_names}
        acts = self._activations()
        at = self.position.mark()
        ckpt = checkpoint_record(self.position.take_index(), at, train, test, self.grad_acc, weights, acts,
                                 self._example_losses())
        self.grad_acc.zero_()
        return ckpt

    # -- the loop ---------------------------------------------------------------------------------

    def _loss(self, x, y) -> torch.Tensor:
        return loss_and_correct(self.cfg.training.loss, self.model(x), y, self.task.n_classes)[0]

    def _train_step(self, idx: torch.Tensor) -> None:
        """One optimizer step on the batch ``idx``; the position is the caller's to advance."""
        loss = self._step(self.optimizer, self.task.x_train[idx], self.task.y_train[idx])  # forward, backward
        if not torch.isfinite(loss):  # before the update: the diverged step changes nothing
            raise DivergedError(self.step, loss.item())
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.zeros(())
        self.grad_acc[0] += norm.to(torch.float64)
        self.grad_acc[1] += 1
        if self.cfg.training.grad_clip is not None:  # between backward and step, where it acts
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.training.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    def run(self) -> Iterator[Checkpoint]:
        """Train to the end, yielding checkpoints; starts from wherever the state says."""
        if self.position.n_checkpoints == 0:
            yield self.checkpoint()  # the initialisation, step 0
            check_stop()
        while not self.position.finished:
            self._train_step(self.position.batch().to(self.device))
            if self.position.advance():
                yield self.checkpoint()
                check_stop()  # the checkpoint is with its writer: stop here if asked
