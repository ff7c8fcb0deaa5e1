"""The one place where vt runs code that a config names: metric plugins and a model factory.

Parsing a config (:func:`vt_core.config.study_config.parse_config`) has no side effects; a command that trains,
computes metrics or lists hookpoints calls :func:`load_user_code` once, at its edge. Importing a
module runs its code, which is why this is explicit, and why modules come only from installed
packages and PYTHONPATH: never from the working directory (a study someone sent, opened from its
own folder, could otherwise run a ``plugin.py`` it carries).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vt_core.config.study_config import ConfigError, CustomModelConfig, StudyConfig
from vt_core.errors import VtError

#: where user code may come from: never the working directory or a study directory implicitly
_WHERE = ("install it (pip install -e .) or name its directory in PYTHONPATH (e.g. `PYTHONPATH=. vt run ...`); "
          "vt does not import from the working directory by itself")


class ModelFactoryError(VtError, ValueError):
    """A user factory cannot be imported, called, or does not return an nn.Module."""


class PluginError(VtError, ValueError):
    """A metric plugin module cannot be imported."""


def _raised(err: BaseException) -> str:
    """``ValueError: bad value (plugin.py, line 12)``: what the user's module raised, and where."""
    import traceback

    if isinstance(err, SyntaxError) and err.filename:
        return f"SyntaxError: {err.msg} ({err.filename}, line {err.lineno})"
    frames = traceback.extract_tb(err.__traceback__)
    vt = Path(__file__).resolve().parents[1]
    user = [f for f in frames if "importlib" not in f.filename and not Path(f.filename).resolve().is_relative_to(vt)]
    where = f" ({user[-1].filename}, line {user[-1].lineno})" if user else ""
    return f"{type(err).__name__}: {str(err)[:300]}{where}"


def resolve_factory(spec: str) -> Callable[..., Any]:
    """Import ``"pkg.module:function"`` (this runs the module's code, like any import)."""
    module, _, attr = spec.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise ModelFactoryError(f"model.factory {spec!r}: cannot import {module!r} ({err}); {_WHERE}") from None
    except Exception as err:  # the user's module raised while it was imported: say what and where
        raise ModelFactoryError(f"model.factory {spec!r}: importing {module!r} raised {_raised(err)}; fix the "
                                f"module, or name another factory") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise ModelFactoryError(f"model.factory {spec!r}: {module} has no callable {attr!r}")
    return fn


def load_plugins(modules: list[str]) -> None:
    """Import each metric plugin module (it registers its metrics as it is imported)."""
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError as err:
            raise PluginError(f"metrics.plugins: cannot import {mod!r} ({err}); {_WHERE}") from None
        except Exception as err:  # the plugin raised while it was imported (a bug, a clash of names)
            raise PluginError(f"metrics.plugins: importing {mod!r} raised {_raised(err)}; fix the plugin, or take "
                              f"it out of metrics.plugins") from None


def load_user_code(config: StudyConfig) -> StudyConfig:
    """Import ``metrics.plugins`` and ``model.factory``; check the metric names the plugins
    register. Errors are :class:`ConfigError` naming the field."""
    from vt_core.metrics.registry import unknown_metrics

    try:
        load_plugins(list(config.metrics.plugins))
    except PluginError as err:
        raise ConfigError(str(err)) from None
    unknown = unknown_metrics(list(config.metrics.names))
    if unknown:
        raise ConfigError(f"metrics.names: unknown metric(s) {unknown} (not built in, and not registered by "
                          f"metrics.plugins {list(config.metrics.plugins)}); `vt metrics` lists them")
    if isinstance(config.model, CustomModelConfig):
        try:
            resolve_factory(config.model.factory)
        except ModelFactoryError as err:
            raise ConfigError(str(err)) from None
    return config
