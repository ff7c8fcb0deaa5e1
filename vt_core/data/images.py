"""Image tasks: a seeded synthetic one, and MNIST / CIFAR-10 / CIFAR-100 read from a local root.

The real datasets are read from their original binary formats (MNIST's IDX files, CIFAR's
"binary version"), so neither torchvision nor unpickling is needed. ``download=True`` fetches the
official archives (checked against their published MD5); offline, a missing file is an error that
says exactly which files to put where.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from vt_core.data import Task
from vt_core.errors import VtError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {  # name: md5 of the .gz
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR = {  # name: (archive url, md5, directory, train files, test files, label bytes, n_classes)
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1, 10),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8",
                 "cifar-100-binary", ["train.bin"], ["test.bin"], 2, 100),
}


class DatasetNotFoundError(VtError, FileNotFoundError):
    """A dataset's files are not under its root; the message lists them and where they go."""


def synthetic_images(n_classes: int, channels: int, size: int, n_train: int, n_test: int, noise: float,
                     seed: int) -> Task:
    """One smooth random template per class, randomly shifted by up to size/8 pixels, plus noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n_classes, channels, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    n = n_train + n_test
    y = torch.randint(0, n_classes, (n,), generator=g)
    shift = size // 8
    dx = torch.randint(-shift, shift + 1, (n,), generator=g)
    dy = torch.randint(-shift, shift + 1, (n,), generator=g)
    x = torch.stack([torch.roll(templates[c], shifts=(int(a), int(b)), dims=(1, 2)) for c, a, b in zip(y, dx, dy)])
    x = x + noise * torch.randn(x.shape, generator=g)
    return Task(x[:n_train], y[:n_train], x[n_train:], y[n_train:], n_classes=n_classes,
                input_dim=channels * size * size)


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - the published checksums are MD5
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:  # noqa: S310 - fixed https URLs
        shutil.copyfileobj(r, f)
    if _md5(tmp) != md5:
        tmp.unlink()
        raise OSError(f"{url}: checksum mismatch (expected MD5 {md5}); try again")
    tmp.replace(dest)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist(root: Path, download: bool) -> tuple[np.ndarray, ...]:
    raw = root / "MNIST" / "raw"
    found = {}
    for name, md5 in MNIST_FILES.items():
        for candidate in (raw / name, raw / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
        else:
            if download:
                _fetch(MNIST_URL + f"{name}.gz", raw / f"{name}.gz", md5)
                found[name] = raw / f"{name}.gz"
    missing = [n for n in MNIST_FILES if n not in found]
    if missing:
        raise DatasetNotFoundError(
            f"MNIST not found under {raw}: missing {missing}. Put the four IDX files (optionally .gz: "
            f"{', '.join(MNIST_FILES)}) in {raw}, or set data.download = true on a machine that is online.")
    x_tr, y_tr = _read_idx(found["train-images-idx3-ubyte"]), _read_idx(found["train-labels-idx1-ubyte"])
    x_te, y_te = _read_idx(found["t10k-images-idx3-ubyte"]), _read_idx(found["t10k-labels-idx1-ubyte"])
    return x_tr[:, None], y_tr, x_te[:, None], y_te


def _cifar(name: str, root: Path, download: bool) -> tuple[np.ndarray, ...]:
    url, md5, directory, train_files, test_files, label_bytes, _ = CIFAR[name]
    d = root / directory
    if download and not all((d / f).is_file() for f in train_files + test_files):
        archive = root / url.rsplit("/", 1)[1]
        if not archive.is_file():
            _fetch(url, archive, md5)
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
    missing = [f for f in train_files + test_files if not (d / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name.upper()} not found under {d}: missing {missing}. Download the *binary version* "
            f"({url}, MD5 {md5}) and extract it into {root} so that {d} holds {train_files + test_files}, "
            f"or set data.download = true on a machine that is online. (The python/pickle version is not "
            f"read: vt never unpickles files.)")

    def read(files):
        rec = label_bytes + 3072
        raw = np.concatenate([np.fromfile(d / f, dtype=np.uint8) for f in files]).reshape(-1, rec)
        return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_bytes - 1]  # fine label last

    x_tr, y_tr = read(train_files)
    x_te, y_te = read(test_files)
    return x_tr, y_tr, x_te, y_te


def local_dataset(name: str, root: str, download: bool, n_train: int | None, n_test: int | None) -> Task:
    """MNIST (1x28x28) or CIFAR-10/100 (3x32x32) as float tensors in [0, 1]."""
    root_path = Path(root).expanduser()
    x_tr, y_tr, x_te, y_te = _mnist(root_path, download) if name == "mnist" else _cifar(name, root_path, download)
    x_tr, y_tr, x_te, y_te = x_tr[:n_train], y_tr[:n_train], x_te[:n_test], y_te[:n_test]

    def t(x):
        return torch.from_numpy(np.array(x, dtype=np.float32)) / 255.0

    n_classes = 10 if name in ("mnist", "cifar10") else 100
    return Task(t(x_tr), torch.from_numpy(y_tr.astype(np.int64)), t(x_te), torch.from_numpy(y_te.astype(np.int64)),
                n_classes=n_classes, input_dim=int(np.prod(x_tr.shape[1:])))
