"""The metric registry: one canonical name per metric, what it reads, its formula and its kernel.

Kinds (what a kernel reads and returns, per checkpoint; leading axes are checkpoints, heads, ...):

- ``matrix``      ``f(w, s) -> (...)`` for each weight matrix w (..., m, n) and its singular values s
                  (..., min(m, n)), values below 1e-5 set to 0 (None unless ``needs_sv``); averaged over
                  the model's matrices, and kept per matrix.
- ``weights``     ``f(flat) -> (steps,)`` over all weight-matrix entries concatenated (steps, N), in the
                  stored dtype (float32): accumulate in float64 (``flat.mean(axis=-1, dtype=np.float64)``).
- ``biases``      the same over all bias entries.
- ``init``        ``f(flat, flat0) -> (steps,)``: the weights against the first checkpoint's.
- ``activation``  ``f(a) -> (steps,)`` for each hookpoint's activations (steps, probe, features);
                  averaged over hookpoints, and kept per hookpoint.
- ``activation_pair`` ``f(a_prev, a) -> (steps,)``: a checkpoint against the one before it.
- ``scalar``      recorded during training (loss, accuracy, gradient norm); no kernel.

Register your own with the decorator, in a module named in the config's ``metrics.plugins``::

    from vt_core.metrics.registry import register_metric

    @register_metric("frobenius_squared", reads="matrix")
    def frobenius_squared(w, s):
        \"\"\"sum w_ij^2\"\"\"
        return (w * w).sum(axis=(-2, -1))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from vt_core.errors import VtError
from vt_core.names import PAPER_METRICS

KINDS = ("matrix", "weights", "biases", "init", "activation", "activation_pair", "scalar")
LAYER_KINDS = ("matrix", "activation", "activation_pair")  # kinds with per-layer / per-hook values


class MetricError(VtError, ValueError):
    """An unknown metric name, a bad registration or a plugin that cannot be imported."""


@dataclass(frozen=True)
class Metric:
    name: str
    reads: str
    formula: str
    kernel: Callable | None = field(default=None, compare=False)
    needs_sv: bool = False
    kernels: bool = False  # also defined on conv kernels, per (out, in) slice (matrix metrics)
    options: tuple[str, ...] = ()  # settings the kernel takes as keywords (OPTIONS)

    def __call__(self, *arrays, **settings):
        """The kernel on ``arrays``, with those of ``settings`` that it takes."""
        assert self.kernel is not None, f"{self.name} is recorded, not computed"
        return self.kernel(*arrays, **{k: v for k, v in settings.items() if k in self.options})

    @property
    def builtin(self) -> bool:
        """vt's own (a recorded scalar, or a kernel defined in vt_core), not a plugin's."""
        return self.kernel is None or getattr(self.kernel, "__module__", "").startswith("vt_core.")

    @property
    def paper(self) -> bool:
        """One of the paper's 14 (:data:`vt_core.names.PAPER_METRICS`)."""
        return self.name in PAPER_METRICS


REGISTRY: dict[str, Metric] = {}


#: settings a kernel may take as keyword arguments: ``convention`` ("paper_code" or "paper_text",
#: metrics.convention) and ``threshold`` (metrics.dormant_threshold)
OPTIONS = ("convention", "threshold")


def register_metric(name: str, reads: str, formula: str | None = None, needs_sv: bool = False,
                    kernels: bool = False) -> Callable:
    """Register ``kernel`` under ``name``; its docstring is the formula unless one is given.
    ``kernels``: a matrix metric that is also taken on each (out, in) slice of a conv kernel."""
    if reads not in KINDS:
        raise MetricError(f"metric {name!r}: reads={reads!r} is not one of {KINDS}")

    def deco(kernel: Callable) -> Callable:
        if name in REGISTRY and REGISTRY[name].kernel is not kernel:
            raise MetricError(f"metric {name!r} is already registered; pick another name")
        text = formula or ((kernel.__doc__ or "").strip().splitlines() or [""])[0]
        params = inspect.signature(kernel).parameters
        REGISTRY[name] = Metric(name, reads, text, kernel, needs_sv, kernels, tuple(o for o in OPTIONS if o in params))
        return kernel

    return deco


def register_scalar(name: str, formula: str) -> None:
    REGISTRY[name] = Metric(name, "scalar", formula)


def unknown_metrics(names: list[str]) -> list[str]:
    """The names in ``names`` that no metric (built-in, or from a plugin imported so far) has."""
    known = {n for n, m in all_metrics().items() if m.reads != "scalar"}
    return [n for n in names if n not in known]


def get(name: str) -> Metric:
    try:
        return REGISTRY[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}; `vt metrics` lists them") from None


def all_metrics() -> dict[str, Metric]:
    return dict(REGISTRY)
