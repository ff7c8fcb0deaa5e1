"""Tasks: generated (modular arithmetic, sparse parity, synthetic images) or shipped / local
(scikit-learn's digits, MNIST and CIFAR from a local root). Each is deterministic in its seed."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vt_core.config.study_config import ConfigError


@dataclass(frozen=True)
class Task:
    x_train: torch.Tensor
    y_train: torch.Tensor  # class indices (long)
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    input_dim: int  # flattened features for vectors and images, vocabulary size for tokens

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (features,), (C, H, W) or (tokens,)."""
        return tuple(self.x_train.shape[1:])


def split(x: torch.Tensor, y: torch.Tensor, train_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_fraction * len(x)))
    if not 0 < n_train < len(x):
        raise ConfigError(f"data.train_fraction={train_fraction} leaves an empty split of {len(x)} examples")
    tr, te = perm[:n_train], perm[n_train:]
    return x[tr], y[tr], x[te], y[te]


def build_task(cfg, seed: int) -> Task:
    from vt_core.data.digits import digits
    from vt_core.data.images import local_dataset, synthetic_images
    from vt_core.data.modular import modular_arithmetic
    from vt_core.data.parity import sparse_parity

    data_seed = seed if cfg.seed is None else cfg.seed
    builders = {
        "sparse_parity": lambda: sparse_parity(cfg.n_bits, cfg.k, cfg.n_train, cfg.n_test, data_seed),
        "modular_addition": lambda: modular_arithmetic(cfg.p, cfg.train_fraction, data_seed, cfg.op),
        "modular_arithmetic": lambda: modular_arithmetic(cfg.p, cfg.train_fraction, data_seed, cfg.op),
        "digits": lambda: digits(cfg.train_fraction, data_seed),
        "synthetic_images": lambda: synthetic_images(cfg.n_classes, cfg.channels, cfg.size, cfg.n_train,
                                                     cfg.n_test, cfg.noise, data_seed),
    }
    if cfg.name in builders:
        return builders[cfg.name]()
    return local_dataset(cfg.name, cfg.root, cfg.download, cfg.n_train, cfg.n_test)
