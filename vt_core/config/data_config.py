"""The ``data`` section of a study config: one pydantic model per task (re-exported by
:mod:`vt_core.config.study_config`)."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vt_core.config.external_config import ExternalDataConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


# --- data ---------------------------------------------------------------------------------------


class SparseParityConfig(_Strict):
    """Sparse parity: x in {-1,+1}^n_bits, label = product of the first k bits."""

    name: Literal["sparse_parity"] = "sparse_parity"
    n_bits: int = Field(40, gt=0, le=4096)
    k: int = Field(3, gt=0, le=4096)
    n_train: int = Field(1000, gt=0, le=10**7)
    n_test: int = Field(100, gt=0, le=10**7)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="data seed; default: the run's seed")

    @model_validator(mode="after")
    def _k_le_n(self) -> SparseParityConfig:
        if self.k > self.n_bits:
            raise ValueError(f"k={self.k} relevant bits cannot exceed n_bits={self.n_bits}; lower k")
        return self


class ModularConfig(_Strict):
    """Modular arithmetic: all pairs (a, b) labelled (a op b) mod p, split at train_fraction.
    Division is a * b^-1 mod p over b != 0 and needs p prime."""

    name: Literal["modular_addition", "modular_arithmetic"] = "modular_addition"
    op: Literal["+", "-", "*", "/"] = "+"
    p: int = Field(113, gt=1, le=3000)
    train_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="data seed; default: the run's seed")

    @model_validator(mode="after")
    def _prime_for_division(self) -> ModularConfig:
        if self.op == "/" and any(self.p % d == 0 for d in range(2, int(self.p ** 0.5) + 1)):
            raise ValueError(f"op='/' needs a prime p (b has no inverse mod {self.p}); use e.g. p=113")
        return self


class DigitsConfig(_Strict):
    """scikit-learn's 8x8 handwritten digits (1,797 images shipped inside the package)."""

    name: Literal["digits"] = "digits"
    train_fraction: float = Field(0.8, gt=0.0, lt=1.0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class SyntheticImagesConfig(_Strict):
    """A seeded image task: one random template per class, plus noise and random shifts."""

    name: Literal["synthetic_images"] = "synthetic_images"
    n_classes: int = Field(10, gt=1, le=1000)
    channels: int = Field(3, gt=0, le=64)
    size: int = Field(32, ge=8, le=1024)
    n_train: int = Field(2048, gt=0, le=10**7)
    n_test: int = Field(512, gt=0, le=10**7)
    noise: float = Field(1.0, ge=0.0, le=1e6)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


class TorchvisionConfig(_Strict):
    """MNIST / CIFAR-10 / CIFAR-100 read from ``root`` in torchvision's layout (no torchvision needed)."""

    name: Literal["mnist", "cifar10", "cifar100"]
    root: str = Field(min_length=1)
    download: bool = False
    n_train: int | None = Field(None, gt=0, description="first n training images (default all)")
    n_test: int | None = Field(None, gt=0)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)


DataConfig = Annotated[Union[SparseParityConfig, ModularConfig, DigitsConfig, SyntheticImagesConfig,
                             TorchvisionConfig, ExternalDataConfig], Field(discriminator="name")]
IMAGE_DATA = ("digits", "synthetic_images", "mnist", "cifar10", "cifar100")
