import gzip

import numpy as np
import pytest
import torch

from tests.helpers import tiny_dict
from vt_core.config.study_config import ConfigError, parse_config
from vt_core.data import build_task
from vt_core.data.digits import digits
from vt_core.data.images import DatasetNotFoundError, local_dataset, synthetic_images
from vt_core.data.modular import modular_arithmetic


@pytest.mark.parametrize("op, f", [("+", lambda a, b: a + b), ("-", lambda a, b: a - b), ("*", lambda a, b: a * b)])
def test_modular_ops(op, f):
    t = modular_arithmetic(11, 0.5, 0, op)
    x = torch.cat([t.x_train, t.x_test])
    y = torch.cat([t.y_train, t.y_test])
    assert len(x) == 121 and (x[:, 2] == 11).all()
    assert torch.equal(y, f(x[:, 0], x[:, 1]) % 11)


def test_modular_division_and_prime_check():
    t = modular_arithmetic(7, 0.5, 0, "/")
    x, y = torch.cat([t.x_train, t.x_test]), torch.cat([t.y_train, t.y_test])
    assert len(x) == 42 and (x[:, 1] != 0).all()
    assert torch.equal((y * x[:, 1]) % 7, x[:, 0])  # y = a / b  <=>  y * b = a
    with pytest.raises(ConfigError, match="needs a prime p"):
        parse_config(tiny_dict("/tmp/x", data={"name": "modular_arithmetic", "op": "/", "p": 8}, training={"epochs": 1, "loss": "cross_entropy"}))


def test_splits_depend_on_the_seed_only():
    a, b, c = modular_arithmetic(11, 0.3, 1), modular_arithmetic(11, 0.3, 1), modular_arithmetic(11, 0.3, 2)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)


def test_digits_are_real_images():
    t = digits(0.8, 0)
    assert t.x_train.shape[1:] == (1, 8, 8) and len(t.x_train) + len(t.x_test) == 1797
    assert 0 <= float(t.x_train.min()) and float(t.x_train.max()) <= 1


def test_synthetic_images_are_learnable_and_seeded():
    t = synthetic_images(4, 3, 16, 256, 64, 0.5, 0)
    assert t.x_train.shape == (256, 3, 16, 16)
    assert torch.equal(t.x_train, synthetic_images(4, 3, 16, 256, 64, 0.5, 0).x_train)
    # nearest class mean already beats chance by far: the task carries signal
    means = torch.stack([t.x_train[t.y_train == c].mean(0) for c in range(4)])
    pred = torch.cdist(t.x_test.flatten(1), means.flatten(1)).argmin(1)
    assert (pred == t.y_test).float().mean() > 0.5


def write_idx(path, arr):
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def test_mnist_from_a_local_root(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    imgs, labels = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 10, 20)
    write_idx(raw / "train-images-idx3-ubyte.gz", imgs)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", imgs[:5])
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels[:5])
    t = local_dataset("mnist", str(tmp_path), False, 12, None)
    assert t.x_train.shape == (12, 1, 28, 28) and t.x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(t.x_train[3, 0].numpy(), imgs[3] / 255.0, rtol=1e-6)
    assert t.y_train.tolist() == labels[:12].tolist()


def test_missing_dataset_says_which_files_go_where(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        local_dataset("mnist", str(tmp_path), False, None, None)
    assert "train-images-idx3-ubyte" in str(err.value) and str(tmp_path / "MNIST" / "raw") in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        local_dataset("cifar100", str(tmp_path), False, None, None)
    assert "cifar-100-binary" in str(err.value) and "train.bin" in str(err.value) and "binary version" in str(err.value)


def test_cifar10_binary_records(tmp_path):
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    rng = np.random.default_rng(1)
    recs = {}
    for f in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        lab, img = rng.integers(0, 10, 3), rng.integers(0, 256, (3, 3072))
        recs[f] = (lab, img)
        np.concatenate([lab[:, None], img], axis=1).astype(np.uint8).tofile(d / f)
    t = local_dataset("cifar10", str(tmp_path), False, None, None)
    assert t.x_train.shape == (15, 3, 32, 32) and t.x_test.shape == (3, 3, 32, 32)
    assert t.y_test.tolist() == recs["test_batch.bin"][0].tolist()
    np.testing.assert_allclose(t.x_test[1].numpy().ravel(), recs["test_batch.bin"][1][1] / 255.0, rtol=1e-6)


def test_build_task_dispatch():
    cfg = parse_config(tiny_dict("/tmp/x", data={"name": "digits"}, training={"epochs": 1, "loss": "cross_entropy"}))
    assert build_task(cfg.data, 3).n_classes == 10


def test_download_fetches_and_checks(tmp_path, monkeypatch):
    """The online path, against a local mirror (file:// URLs): fetched, checksummed, then read."""
    import hashlib

    from vt_core.data import images

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)), "train-labels-idx1-ubyte": np.arange(6) % 10,
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(2)}
    md5 = {}
    for name, arr in files.items():
        write_idx(mirror / f"{name}.gz", arr)
        md5[name] = hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(images, "MNIST_URL", mirror.as_uri() + "/")
    monkeypatch.setattr(images, "MNIST_FILES", md5)
    t = local_dataset("mnist", str(tmp_path / "root"), True, None, None)
    assert t.x_train.shape == (6, 1, 28, 28)
    assert (tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file()
    monkeypatch.setattr(images, "MNIST_FILES", {**md5, "t10k-labels-idx1-ubyte": "0" * 32})
    (tmp_path / "root" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(OSError, match="checksum mismatch"):
        local_dataset("mnist", str(tmp_path / "root"), True, None, None)
