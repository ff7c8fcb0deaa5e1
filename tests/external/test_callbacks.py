"""vt_core.external.callbacks: Lightning and Hugging Face Trainer fits recorded into vt stores (tiny models
and data made here; nothing from a hub)."""

import numpy as np
import pytest
import torch

from tests.helpers import assert_reads_back, store_arrays
from vt_core.runtime import Runtime
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, run_path

THREAD = Runtime(writer="thread")


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long()


def test_lightning_fit_is_recorded(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from vt_core.external.callbacks.lightning import VtCallback

    x, y = _data()

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

        def forward(self, inp):
            return self.net(inp)

        def training_step(self, batch, _):
            loss = torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, _):
            out = self(batch[0])
            self.log("val_acc", (out.argmax(-1) == batch[1]).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    cb = VtCallback(tmp_path / "s", seed=0, every_steps=4, hooks=["net.1"], probe=x[:5], runtime=THREAD)
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=3, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Net(), loader, loader)
    arrays = store_arrays(run_path(tmp_path / "s", 0))
    assert list(arrays["step"]) == [0, 4, 8, 12]  # 4 steps per epoch, 3 epochs
    assert np.isnan(arrays["train_loss"][0]) and np.isfinite(arrays["train_loss"][1:]).all()
    assert np.isfinite(arrays["test_accuracy"][1:]).all()  # validation at each epoch's end, at steps 4, 8, 12
    assert arrays["activations/net.1"].shape == (4, 5, 8)
    assert RunStore(run_path(tmp_path / "s", 0), mode="r").status == "complete"
    assert load_study(tmp_path / "s").model.class_name.endswith("Net")
    assert_reads_back(tmp_path / "s", {0: [0, 4, 8, 12]})  # issue 30, item 4


def test_hf_trainer_is_recorded(tmp_path):
    transformers = pytest.importorskip("transformers")
    from vt_core.external.callbacks.hf import VtTrainerCallback

    x, y = _data()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

        def forward(self, x, labels=None):
            out = self.net(x)
            return {"loss": torch.nn.functional.cross_entropy(out, labels), "logits": out}

    data = [{"x": x[i], "labels": y[i]} for i in range(len(x))]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=12, per_device_train_batch_size=8,
                                          logging_steps=4, save_strategy="no", report_to="none", use_cpu=True,
                                          learning_rate=0.1, disable_tqdm=True)
    cb = VtTrainerCallback(tmp_path / "s", seed=2, every_steps=4, runtime=THREAD)
    torch.manual_seed(0)
    transformers.Trainer(model=Net(), args=args, train_dataset=data, callbacks=[cb]).train()
    arrays = store_arrays(run_path(tmp_path / "s", 2))
    assert list(arrays["step"]) == [0, 4, 8, 12]
    assert np.isnan(arrays["train_loss"][0]) and np.isfinite(arrays["train_loss"][1:]).all()  # logged at 4, 8, 12
    assert sorted(k for k in arrays if k.startswith("weights/")) == [
        "weights/net.0.bias", "weights/net.0.weight", "weights/net.2.bias", "weights/net.2.weight", "weights/step"]
    assert RunStore(run_path(tmp_path / "s", 2), mode="r").status == "complete"
    assert_reads_back(tmp_path / "s", {2: [0, 4, 8, 12]})  # issue 30, item 4
