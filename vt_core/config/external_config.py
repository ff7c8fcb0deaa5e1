"""The config of a study vt did not train: recorded from the user's own loop
(:class:`vt_core.external.recorder.Recorder`) or imported from checkpoint files (`vt import`).

What is known is recorded, and what is not is said to be unknown: ``model`` is an
:class:`ExternalModelConfig` (the model's class and the shapes of the recorded parameters),
``data`` an :class:`ExternalDataConfig` (a description, if the user gave one), the schedule is
``checkpoints`` as for any study, and ``origin`` (:class:`OriginConfig`) names where the runs came
from and which sections vt was not told (``optimizer`` and ``training`` are left out: asking a
study for them raises :class:`ExternalStudyError`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Shape = list[Annotated[int, Field(ge=0)]]


class RoleEntry(_Strict):
    """A stored tensor's role for the weight metrics (:mod:`vt_core.metrics.roles`), why, and
    whether it is known (from the model), guessed (from a plain state_dict's names, shapes and
    values) or given (``--roles``)."""

    role: Literal["matrix", "heads", "merged_heads", "kernel", "bias", "exclude"]
    why: str = Field(max_length=300)
    certainty: Literal["known", "guessed", "given"]


class ExternalModelConfig(_Strict):
    """A model that vt did not build: its class (``module.QualName``, or ``state_dict`` when only
    the files are known) and the shape of every recorded parameter. ``factory`` (``pkg.mod:fn``,
    imported only when activations are recorded by `vt import`) builds it again."""

    name: Literal["external"] = "external"
    class_name: str = Field(min_length=1, max_length=300)
    parameters: dict[str, Shape] = Field(min_length=1)
    factory: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    rename: dict[str, str] = Field(default_factory=dict, description="prefixes of the files' tensor names -> "
                                   "the model's (a Hugging Face save's embed_out. -> lm_head.)")
    roles: dict[str, RoleEntry] = Field(default_factory=dict, description="each stored tensor's role for the weight "
                                        "metrics; empty in studies made before roles were recorded here")

    @property
    def guessed_roles(self) -> list[str]:
        return [n for n, r in self.roles.items() if r.certainty == "guessed"]

    @property
    def n_parameters(self) -> int:
        out = 0
        for shape in self.parameters.values():
            n = 1
            for d in shape:
                n *= d
            out += n
        return out


class ExternalDataConfig(_Strict):
    """The data of a study vt did not train: unknown, unless the user described it."""

    name: Literal["external"] = "external"
    description: str | None = Field(None, max_length=2000, description="what the user said the data are; None: unknown")


class OriginConfig(_Strict):
    """Where a study's runs came from when vt did not train them."""

    kind: Literal["recorder", "import"]
    unknown: list[str] = Field(default_factory=lambda: ["data", "optimizer", "training"],
                               description="sections of the config vt was not told")
    source: str | None = Field(None, description="import: the checkpoint directory or URL")
    pattern: str | None = Field(None, description="import: the file-name pattern, with {seed} and {step}")
    scalars: str | None = Field(None, description="import: the user's training log the losses and accuracies "
                                "came from (--scalars)")
    scalar_match: str | None = Field(None, max_length=2000, description="import: how the log's columns and "
                                     "steps were matched to the checkpoints")

    def describe(self) -> str:
        how = ("recorded from its own training loop by vt_core.Recorder" if self.kind == "recorder"
               else f"imported from checkpoint files ({self.source})")
        return how


EXTERNAL_UNKNOWN = ("data", "optimizer", "training")
