"""Study configuration: pydantic models, loaded from TOML, validated at the edge. Unknown keys are
errors (a typo is named, not ignored); :func:`load_config` turns pydantic's errors into one
:class:`ConfigError` naming each bad field. What needs the model or the disk: :mod:`vt_core.training.preflight`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from vt_core.config.analysis_config import HMMConfig, HooksConfig, LiveConfig, MetricsConfig
from vt_core.config.data_config import IMAGE_DATA, DataConfig, ModularConfig, SparseParityConfig
from vt_core.config.external_config import ExternalDataConfig, ExternalModelConfig, OriginConfig
from vt_core.config.messages import format_errors
from vt_core.errors import VtError
from vt_core.names import SCALARS, is_function_feature


class ConfigError(VtError, ValueError):
    """A study configuration is invalid; the message names each field and how to fix it."""


class ExternalStudyError(ConfigError):
    """A study vt did not train was asked for what only training knows (its optimizer, its epochs)."""


class _Strict(BaseModel):
    """Unknown keys, loose types (``epochs = true``, ``lr = "0.1"``, ``epochs = 12.0``) and
    non-finite numbers (``lr = inf``) are errors, never conversions."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# --- models -------------------------------------------------------------------------------------


class MLPConfig(_Strict):
    name: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0, le=65536)]] = Field(default_factory=lambda: [128], min_length=1)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    bias: bool = True
    norm: Literal["none", "batch", "layer"] = "none"


class TransformerConfig(_Strict):
    name: Literal["transformer"] = "transformer"
    n_layers: int = Field(1, gt=0, le=256)
    d_model: int = Field(128, gt=0, le=65536)
    n_heads: int = Field(4, gt=0, le=1024)
    d_head: int = Field(32, gt=0, le=65536)
    d_mlp: int = Field(512, gt=0, le=262144)
    activation: Literal["relu", "gelu"] = "relu"
    layer_norm: bool = False


class ResNetConfig(_Strict):
    """ResNet-18 style (CIFAR stem); ``batch_norm`` and ``residual`` off give the paper's
    destabilised variant."""

    name: Literal["resnet"] = "resnet"
    width: int = Field(64, gt=0, le=4096, description="channels of the first stage; doubled at each stage")
    blocks: list[Annotated[int, Field(gt=0, le=64)]] = Field(default_factory=lambda: [2, 2, 2, 2], min_length=1)
    batch_norm: bool = True
    residual: bool = True


class LeNetConfig(_Strict):
    name: Literal["lenet5"] = "lenet5"
    activation: Literal["relu", "tanh"] = "relu"


class CustomModelConfig(_Strict):
    """Your own model: ``factory = "mypkg.nets:make_net"`` is imported and called with ``kwargs``
    (plus ``input_shape`` and ``n_classes`` when it accepts them). Importing it runs its code."""

    name: Literal["custom"] = "custom"
    factory: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _model_kind(v) -> str:
    if isinstance(v, dict):
        if v.get("name") == "external":
            return "external"
        return "custom" if "factory" in v else v.get("name", "")
    return getattr(v, "name", "")


ModelConfig = Annotated[
    Union[Annotated[MLPConfig, Tag("mlp")], Annotated[TransformerConfig, Tag("transformer")],
          Annotated[ResNetConfig, Tag("resnet")], Annotated[LeNetConfig, Tag("lenet5")],
          Annotated[CustomModelConfig, Tag("custom")], Annotated[ExternalModelConfig, Tag("external")]],
    Discriminator(_model_kind),
]


# --- optimisation and schedule ------------------------------------------------------------------


class OptimizerConfig(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1e6)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(default_factory=lambda: [0.9, 0.999], min_length=2,
                                                                 max_length=2, description="Adam's, each in [0, 1)")


class TrainingConfig(_Strict):
    epochs: int = Field(gt=0, le=10**6)
    batch_size: int | None = Field(None, gt=0, le=10**7, description="None: full batch")
    loss: Literal["cross_entropy", "hinge", "mse"] = "cross_entropy"
    grad_clip: float | None = Field(None, gt=0.0, le=1e12)
    lr_schedule: Literal["constant", "warmup_cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0, le=10**9)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine floor as a fraction of lr")
    device: str = Field("cpu", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto: cuda, then mps, then cpu")
    seed_group_size: Annotated[int, Field(ge=1, le=100_000)] | Literal["auto"] = Field(
        "auto", description="seeds trained together as one batched model; auto: 1 on a CPU, 40 on CUDA")
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="training step arithmetic: fp32 (exact), tf32 matmuls (CUDA) or bf16 autocast")
    compile: Literal["none", "default", "reduce-overhead", "max-autotune"] = Field(
        "none", description="torch.compile the training step (forward and backward) with this mode; "
        "reduce-overhead and max-autotune also use CUDA graphs on CUDA; falls back to eager if it fails")


class CheckpointConfig(_Strict):
    """Exactly one schedule. The initialisation (step 0) and the last step are always kept."""

    every_epochs: int | None = Field(None, gt=0, le=10**6)
    every_steps: int | None = Field(None, gt=0, le=10**9)
    log_spaced: int | None = Field(None, gt=1, le=10**5, description="about this many steps, log-spaced (dense early)")
    steps: list[Annotated[int, Field(ge=0, le=10**9)]] | None = Field(None, min_length=1, max_length=10**5,
                                                                     description="explicit steps")

    @model_validator(mode="after")
    def _exactly_one(self) -> CheckpointConfig:
        set_ = [k for k in ("every_epochs", "every_steps", "log_spaced", "steps") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(f"set exactly one of every_epochs, every_steps, log_spaced or steps (got {set_ or 'none'})")
        if self.steps is not None and sorted(set(self.steps)) != self.steps:
            raise ValueError("steps must be strictly increasing")
        return self


#: more seeds than this in one study is a config slip (10**9 took all memory before it was refused)
MAX_SEEDS = 100_000


class StudyConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True, strict=True, allow_inf_nan=False)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(min_length=1, max_length=100_000)
    output_dir: str = Field(min_length=1,
                            description="study directory: a path (relative to the working dir) or an fsspec URL")
    model: ModelConfig
    data: DataConfig
    # read through the properties below: a study vt did not train has neither (None here)
    given_optimizer: OptimizerConfig | None = Field(None, alias="optimizer")
    given_training: TrainingConfig | None = Field(None, alias="training")
    checkpoints: CheckpointConfig
    hooks: HooksConfig = HooksConfig()
    metrics: MetricsConfig = MetricsConfig()
    hmm: HMMConfig = HMMConfig()
    live: LiveConfig = LiveConfig()
    origin: OriginConfig | None = Field(None, description="set when vt did not train the runs (recorder, import)")

    @model_validator(mode="before")
    @classmethod
    def _default_optimizer(cls, data):
        if isinstance(data, dict) and _model_kind(data.get("model")) != "external" and data.get("optimizer") is None:
            data = {**data, "optimizer": {}}
        return data

    @property
    def optimizer(self) -> OptimizerConfig:
        if self.given_optimizer is None:
            raise self._unknown("optimizer")
        return self.given_optimizer

    @property
    def training(self) -> TrainingConfig:
        if self.given_training is None:
            raise self._unknown("training settings")
        return self.given_training

    @property
    def external(self) -> bool:
        """True for a study vt did not train (recorded from the user's loop, or imported)."""
        return self.origin is not None

    def _unknown(self, what: str) -> ExternalStudyError:
        how = self.origin.describe() if self.origin else "not trained by vt"
        return ExternalStudyError(f"study {self.name!r} was {how}: vt did not train it and does not know its "
                                  f"{what}, so it cannot train or retrain its seeds; `vt analyze STUDY` analyses it")

    @field_validator("output_dir")
    @classmethod
    def _location(cls, v: str) -> str:
        """A local path, a file:// URL (made a path), or any fsspec URL whose backend is installed
        (memory://, s3://, gs://, ...): see vt_core.storage.location."""
        from vt_core.storage.location import LocationError, check_url, local_path

        try:
            return check_url(local_path(v))
        except LocationError as err:
            raise ValueError(f"output_dir {err}") from None

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, v):
        if isinstance(v, int) and not isinstance(v, bool):
            if v <= 0:
                raise ValueError(f"seeds={v}: give a positive count or a list of seeds")
            if v > MAX_SEEDS:
                raise ValueError(f"seeds={v}: at most {MAX_SEEDS:,} seeds in one study (the paper trains 40); "
                                 f"split a larger sweep into studies and `vt compare` them")
            return list(range(v))
        if isinstance(v, (list, tuple)) and len(v) > MAX_SEEDS:
            raise ValueError(f"{len(v):,} seeds listed: at most {MAX_SEEDS:,} in one study")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            seen: set[int] = set()
            dup = sorted({s for s in seeds if s in seen or seen.add(s)})  # type: ignore[func-returns-value]
            raise ValueError(f"seeds must be unique; repeated: {dup}")
        return seeds

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        external = [isinstance(self.model, ExternalModelConfig), isinstance(self.data, ExternalDataConfig),
                    self.origin is not None]
        if any(external) and not all(external):
            raise ValueError("model.name='external', data.name='external' and origin go together: they describe "
                             "a study vt did not train (vt_core.Recorder, `vt import`)")
        if not any(external) and self.given_training is None:
            raise ValueError("training: required; add it to the config")
        if self.given_training and self.given_training.loss == "hinge" and not isinstance(self.data, SparseParityConfig):
            raise ValueError("training.loss='hinge' needs a binary task (data.name='sparse_parity')")
        if isinstance(self.model, TransformerConfig) and not isinstance(self.data, ModularConfig):
            raise ValueError("model.name='transformer' needs token inputs (data.name='modular_addition')")
        if isinstance(self.model, (ResNetConfig, LeNetConfig)) and self.data.name not in IMAGE_DATA:
            raise ValueError(f"model.name={self.model.name!r} needs images (data.name in {list(IMAGE_DATA)})")
        feats = self.hmm.features or []
        known = set(self.metrics.names) | set(SCALARS)
        bad = [f for f in feats if f.split("@")[0] not in known and not is_function_feature(f)]
        if bad:
            raise ValueError(f"hmm.features {bad} are not computed; choose from {sorted(known)}")
        return self

    # -- identity -------------------------------------------------------------------------------

    def training_dict(self) -> dict:
        """The part of the config that determines what training writes (not seeds, paths, analysis)."""
        d = self.model_dump(mode="json")
        out = {k: d[k] for k in ("model", "data", "optimizer", "training", "checkpoints", "hooks")}
        if self.origin is not None:
            out["origin"] = d["origin"]["kind"]
            out["model"].pop("roles", None)  # what the metrics read, not what a seed stores
            out.pop("data")  # only a description: seeds may describe it differently
            if self.origin.kind == "import":  # the steps found grow as checkpoints are added
                out.pop("checkpoints")
            return out
        # how seeds are grouped, and whether the step is compiled, change nothing a seed stores (up
        # to float rounding): not part of its identity, so a seed trained in a group resumes alone;
        # fp32 (the default) is left out so that studies made before these options existed keep
        # their hash
        out["training"].pop("seed_group_size", None)
        out["training"].pop("compile", None)
        if out["training"].get("precision") == "fp32":
            out["training"].pop("precision")
        if not out["hooks"].get("per_example_loss"):  # off: studies made before it keep their hash
            out["hooks"].pop("per_example_loss")
        return out

    def training_hash(self) -> str:
        blob = json.dumps(self.training_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def output_size(self, n_classes: int) -> int:
        """The model's output width for a task of ``n_classes``: one score for the hinge loss (a
        binary task's sign), one per class otherwise."""
        return 1 if self.training.loss == "hinge" else n_classes

    @property
    def hmm_features(self) -> list[str]:
        return list(self.hmm.features or self.metrics.names)


def with_output_dir(config: StudyConfig, template: str, when: datetime.datetime | None = None) -> StudyConfig:
    """``config`` writing to ``template``, with ``{date}`` (``2026-12-02``) and ``{time}``
    (``031500``, UTC) filled in: a scheduled run's own study each night, instead of the same study
    again (which a second night finds finished: a no-op)."""
    when = when or datetime.datetime.now(datetime.UTC)
    try:
        where = template.format(date=when.strftime("%Y-%m-%d"), time=when.strftime("%H%M%S"))
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"output_dir template {template!r}: {err!r} is not {{date}} or {{time}}; use those, "
                          f"or a plain path") from None
    return parse_config(config.model_dump(mode="json") | {"output_dir": where}, f"output_dir={where!r}")


def parse_config(data: dict, source: str = "<dict>") -> StudyConfig:
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None


def load_config(path: str | Path) -> StudyConfig:
    """Load and validate a TOML study config; raises ConfigError naming every bad field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass the path to a .toml study config")
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); pass a .toml study config") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {str(err)[:200]}") from None
    return parse_config(data, str(path))
