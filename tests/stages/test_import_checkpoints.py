"""vt_core.stages.import_checkpoints and vt_core.external.checkpoint_files: checkpoints on disk become a study."""

import numpy as np
import pytest
import torch
import xarray as xr

from tests.helpers import store_arrays, tiny_dict
from vt_core.config.study_config import parse_config
from vt_core.external.checkpoint_files import CheckpointFilesError, find_checkpoints
from vt_core.runtime import Runtime
from vt_core.stages.import_checkpoints import import_seed, merged, plan_import
from vt_core.stages.metrics import compute_metrics, finalize_metrics, plan_metrics
from vt_core.stages.train import train_seed
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, prepare_study, run_path

THREAD = Runtime(writer="thread")


def _import(source, study, pattern, **options):
    plan = plan_import(source, study, pattern, **options)
    return [import_seed(study, int(s), cks, plan["probe"]) for s, cks in plan["seeds"].items()]


def _streamed(source, study, pattern, **options):
    """The import flow's passes, without Prefect: each seed's first checkpoint, the metrics plan,
    then the rest with the metrics computed as the checkpoints are committed."""
    plan = plan_import(source, study, pattern, **options)
    seeds = sorted(int(s) for s in plan["seeds"])
    first = [import_seed(study, s, plan["seeds"][str(s)], plan["probe"], limit=1) for s in seeds]
    steps = sorted({c[0] for cks in plan["seeds"].values() for c in cks})
    mplan = plan_metrics(study, seeds, steps)
    out = [merged(f, import_seed(study, s, plan["seeds"][str(s)], plan["probe"], metrics=mplan))
           for f, s in zip(first, seeds)]
    return out, finalize_metrics(study, mplan, [s["metrics"] for s in out])


def _metrics(study, seeds):
    plan = plan_metrics(study, seeds)
    finalize_metrics(study, plan, [compute_metrics(study, s, plan) for s in seeds])
    return xr.open_zarr(str(study / "metrics.zarr"), consolidated=False).load()


def _export(study, seeds, out, fmt="pt"):
    """Every committed checkpoint of a vt study as one state_dict file per step (what users have)."""
    for seed in seeds:
        arrays = store_arrays(run_path(study, seed))
        names = [k.removeprefix("weights/") for k in arrays if k.startswith("weights/") and k != "weights/step"]
        for i, step in enumerate(arrays["step"]):
            state = {n: torch.from_numpy(np.ascontiguousarray(arrays[f"weights/{n}"][i])) for n in names}
            if fmt == "pt":
                (out / f"seed{seed}").mkdir(parents=True, exist_ok=True)
                torch.save({"model": state, "step": int(step)}, out / f"seed{seed}" / f"step_{step}.pt")
            else:  # one folder per step, two shards
                from safetensors.torch import save_file

                d = out / f"run-{seed}" / f"checkpoint-{step}"
                d.mkdir(parents=True)
                half = len(names) // 2
                save_file({n: state[n] for n in names[:half]}, str(d / "model-00001-of-00002.safetensors"))
                save_file({n: state[n] for n in names[half:]}, str(d / "model-00002-of-00002.safetensors"))


@pytest.fixture(scope="module")
def vt_study(tmp_path_factory):
    """3 seeds x 50 checkpoints trained by vt (full batch, a checkpoint at every step)."""
    tmp = tmp_path_factory.mktemp("vt")
    cfg = parse_config(tiny_dict(tmp / "vt", training={"epochs": 49, "batch_size": None},
                                 checkpoints={"every_epochs": None, "every_steps": 1}))
    prepare_study(cfg)
    for seed in cfg.seeds:
        train_seed(cfg.output_dir, seed, runtime=THREAD)
    return tmp / "vt"


def test_import_gives_the_metrics_vt_run_gives(vt_study, tmp_path):
    _export(vt_study, [0, 1, 2], tmp_path / "ckpts")
    summaries = _import(tmp_path / "ckpts", tmp_path / "imp", "seed{seed}/step_{step}.pt")
    assert [s["committed_steps"] for s in summaries] == [50, 50, 50]
    ours, theirs = _metrics(tmp_path / "imp", [0, 1, 2]), _metrics(vt_study, [0, 1, 2])
    names = list(load_study(vt_study).metrics.names)
    np.testing.assert_array_equal(ours["step"], theirs["step"])
    np.testing.assert_allclose(ours["value"].sel(metric=names), theirs["value"].sel(metric=names), rtol=1e-12)
    # the vt study also has its hookpoint (activations) as a layer; the weight matrices are equal
    np.testing.assert_allclose(ours["per_layer"], theirs["per_layer"].sel(layer=ours["layer"].values), rtol=1e-12)
    cfg = load_study(tmp_path / "imp")
    assert cfg.origin.kind == "import" and cfg.model.class_name == "state_dict" and len(cfg.checkpoints.steps) == 50
    assert cfg.model.parameters == {n: list(v.shape[1:]) for n, v in
                                    RunStore(run_path(vt_study, 0), mode="r").dataset("weights").data_vars.items()}


def test_metrics_computed_as_checkpoints_stream_in_equal_the_metric_stage(vt_study, tmp_path, monkeypatch):
    import shutil

    from vt_core.metrics import store as incremental
    from vt_core.stages import metrics as stage

    _export(vt_study, [0, 1, 2], tmp_path / "ckpts")
    one = RunStore(run_path(vt_study, 0), mode="r").dataset("weights")
    per_checkpoint = sum(v.dtype.itemsize * int(np.prod(v.shape[1:])) for v in one.data_vars.values())
    monkeypatch.setattr(stage, "STREAM_BYTES", 7 * per_checkpoint)  # a block every 7 checkpoints
    monkeypatch.setattr(stage, "STREAM_WRITE_SECONDS", 0.0)  # the region written after each block
    seen = []
    update = incremental.SeedRegion.update
    monkeypatch.setattr(incremental.SeedRegion, "update", lambda self, store: seen.append(store.committed)
                        or update(self, store))
    study = tmp_path / "imp"
    summaries, cells = _streamed(tmp_path / "ckpts", study, "seed{seed}/step_{step}.pt")
    n_metrics = len(xr.open_zarr(str(study / "metrics.zarr"), consolidated=False)["metric"])
    assert [s["metrics"]["computed"] for s in summaries] == [50 * n_metrics] * 3
    assert cells["computed"] == 150 * n_metrics and cells["reused"] == 0
    # computed while the import went on, a block at a time (8 = 1 + 7: the first pass took one)
    assert seen == [8, 15, 22, 29, 36, 43, 50, 50] * 3
    streamed = xr.open_zarr(str(study / "metrics.zarr"), consolidated=False).load()
    # the metric stage on the same stores, from nothing, gives the same values bit for bit
    shutil.copytree(study, tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "metrics.zarr")
    xr.testing.assert_identical(streamed.drop_vars("run_id"), _metrics(tmp_path / "again", [0, 1, 2]).drop_vars("run_id"))
    # and `vt analyze` afterwards reads no store again: the plan is the same, every cell reused
    plan = plan_metrics(study, [0, 1, 2])
    assert not plan["rebuild"]
    counts = [compute_metrics(study, s, plan) for s in (0, 1, 2)]
    assert [c["computed"] for c in counts] == [0, 0, 0] and [c["reused"] for c in counts] == [50 * n_metrics] * 3


def test_streamed_metrics_after_a_failed_import_resume_equal(tmp_path, monkeypatch):
    from vt_core.stages import metrics as stage

    monkeypatch.setattr(stage, "STREAM_BYTES", 1)  # every checkpoint
    monkeypatch.setattr(stage, "STREAM_WRITE_SECONDS", 0.0)
    src = tmp_path / "ck"
    torch.manual_seed(0)
    for seed in (0, 1):
        (src / f"seed{seed}").mkdir(parents=True)
        for step in range(8):
            torch.save({"w": torch.randn(5, 4), "v": torch.randn(3, 5), "b": torch.randn(5)},
                       src / f"seed{seed}" / f"step_{step}.pt")
    good = (src / "seed1" / "step_5.pt").read_bytes()
    (src / "seed1" / "step_5.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFilesError, match="step_5.pt cannot be read"):
        _streamed(src, tmp_path / "s", "seed{seed}/step_{step}.pt")
    assert RunStore(run_path(tmp_path / "s", 1), mode="r").committed == 5
    (src / "seed1" / "step_5.pt").write_bytes(good)
    summaries, cells = _streamed(src, tmp_path / "s", "seed{seed}/step_{step}.pt")
    assert [s["committed_steps"] for s in summaries] == [8, 8] and summaries[0]["skipped"]
    streamed = xr.open_zarr(str(tmp_path / "s" / "metrics.zarr"), consolidated=False).load()
    assert bool(streamed["computed"].all())
    import shutil

    shutil.rmtree(tmp_path / "s" / "metrics.zarr")
    xr.testing.assert_identical(streamed.drop_vars("run_id"), _metrics(tmp_path / "s", [0, 1]).drop_vars("run_id"))


def test_a_metric_that_cannot_be_computed_stops_the_stream_not_the_import(tmp_path):
    from vt_core.metrics.compute import MetricsComputeError

    (tmp_path / "ck" / "seed0").mkdir(parents=True)
    for step in range(4):  # biases only: no weight matrix for the matrix metrics
        torch.save({"b": torch.randn(5), "c": torch.randn(3)}, tmp_path / "ck" / "seed0" / f"step_{step}.pt")
    with pytest.raises(MetricsComputeError, match="no weight matrices"):
        _streamed(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt")
    store = RunStore(run_path(tmp_path / "s", 0), mode="r")
    assert store.status == "complete" and store.committed == 4 and store.check(read=True) == []


def test_a_store_damaged_while_metrics_stream_is_named(tmp_path, monkeypatch):
    from vt_core.metrics import store as incremental
    from vt_core.stages import metrics as stage

    monkeypatch.setattr(stage, "STREAM_BYTES", 1)
    (tmp_path / "ck" / "seed0").mkdir(parents=True)
    for step in range(4):
        torch.save({"w": torch.randn(64, 64)}, tmp_path / "ck" / "seed0" / f"step_{step}.pt")
    update = incremental.SeedRegion.update

    def flip_then_update(self, store):  # a bit of checkpoint 0 flips on disk after the last commit
        if store.committed == 4:
            chunk = next(p for p in (store.path / "weights" / "w").iterdir() if p.name.startswith("c"))
            data = bytearray(chunk.read_bytes())
            data[5000] ^= 0x10
            chunk.write_bytes(bytes(data))
        return update(self, store)

    monkeypatch.setattr(incremental.SeedRegion, "update", flip_then_update)
    with pytest.raises(stage.DamagedRunError, match=r"seed 0: array weights/w: checkpoint 0 \(step 0\): fails its checksum.*import the seed again"):
        _streamed(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt")


def test_safetensors_shards_equal_torch_files_and_import_is_idempotent(vt_study, tmp_path):
    _export(vt_study, [1], tmp_path / "pt")
    _export(vt_study, [1], tmp_path / "st", fmt="safetensors")
    _import(tmp_path / "pt", tmp_path / "a", "seed{seed}/step_{step}.pt")
    _import(tmp_path / "st", tmp_path / "b", "run-{seed}/checkpoint-{step}")
    a, b = store_arrays(run_path(tmp_path / "a", 1)), store_arrays(run_path(tmp_path / "b", 1))
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    before = RunStore(run_path(tmp_path / "b", 1), mode="r").attrs
    again = _import(tmp_path / "st", tmp_path / "b", "run-{seed}/checkpoint-{step}")
    assert again[0]["skipped"] and RunStore(run_path(tmp_path / "b", 1), mode="r").attrs == before


def test_import_resumes_after_a_bad_file_and_takes_new_checkpoints(tmp_path):
    src = tmp_path / "ck"
    (src / "seed0").mkdir(parents=True)
    torch.manual_seed(0)
    w = [torch.randn(4, 3) for _ in range(8)]
    for step in range(6):
        torch.save({"w": w[step], "b": torch.zeros(4)}, src / "seed0" / f"step_{step * 10}.pt")
    (src / "seed0" / "step_30.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFilesError, match="step_30.pt cannot be read"):
        _import(src, tmp_path / "s", "seed{seed}/step_{step}.pt")
    store = RunStore(run_path(tmp_path / "s", 0), mode="r")
    assert store.committed == 3 and store.status == "failed" and store.check(read=True) == []
    torch.save({"w": w[3], "b": torch.zeros(4)}, src / "seed0" / "step_30.pt")
    for step in (6, 7):
        torch.save({"w": w[step], "b": torch.zeros(4)}, src / "seed0" / f"step_{step * 10}.pt")
    (s,) = _import(src, tmp_path / "s", "seed{seed}/step_{step}.pt")
    assert s["imported"] == 5 and s["committed_steps"] == 8
    arrays = store_arrays(run_path(tmp_path / "s", 0))
    assert list(arrays["step"]) == [0, 10, 20, 30, 40, 50, 60, 70]
    np.testing.assert_array_equal(arrays["weights/w"], torch.stack(w).numpy())
    assert load_study(tmp_path / "s").checkpoints.steps == [0, 10, 20, 30, 40, 50, 60, 70]


def test_patterns_say_what_did_not_match(tmp_path):
    for rel in ("seed0/step_1.pt", "seed0/step_12.pt", "seed0/final.pt", "seed1/step-1.pt", "seed1/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"w": torch.zeros(2, 2)}, tmp_path / rel)
    # seed1's files match nothing: named (seed0/final.pt lies beside matched checkpoints)
    with pytest.raises(CheckpointFilesError, match=r"1 checkpoint file\(s\).*do not match.*: seed1/step-1.pt;"):
        find_checkpoints(tmp_path, "seed{seed}/step_{step}.pt")
    with pytest.raises(CheckpointFilesError, match="no checkpoint .* matches .*files there: seed0/final.pt"):
        find_checkpoints(tmp_path, "run{seed}/step_{step}.pt")
    with pytest.raises(CheckpointFilesError, match=r"has no \{step\}"):
        find_checkpoints(tmp_path, "seed{seed}/final.pt")
    found = find_checkpoints(tmp_path, "seed{seed}/*{step}.pt")
    assert sorted(found) == [0, 1] and [s for s, _ in found[0]] == [1, 12] and [s for s, _ in found[1]] == [1]


def test_a_pickle_is_never_unpickled(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "ck" / "seed0").mkdir(parents=True)
    (tmp_path / "ck" / "seed0" / "step_0.pt").write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointFilesError, match="weights_only=True"):
        _import(tmp_path / "ck", tmp_path / "s", "seed{seed}/step_{step}.pt")


def _neox_series(out, seeds=(0, 1), steps=(0, 10, 20)):
    """Hugging Face saves (safetensors shards, one folder per step) of a tiny GPT-NeoX, made here."""
    from examples.neox import tiny_gpt_neox

    saved = {}
    for seed in seeds:
        torch.manual_seed(seed)
        model = tiny_gpt_neox()
        for step in steps:
            model.save_pretrained(out / f"seed{seed}" / f"checkpoint-{step}", max_shard_size="100KB")
            saved[(seed, step)] = {k: v.clone() for k, v in model.state_dict().items()}
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(0.01 * torch.randn_like(p))
    return saved


def test_gpt_neox_checkpoints_with_activations(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    import shutil

    from vt_core.names import PAPER_METRICS
    from vt_core.stages import metrics as stage

    monkeypatch.setattr(stage, "STREAM_BYTES", 1)  # metrics of each checkpoint as soon as it is committed
    saved = _neox_series(tmp_path / "hf", steps=(0, 10, 20, 30))
    torch.save(torch.randint(0, 512, (4, 16), generator=torch.Generator().manual_seed(0)), tmp_path / "probe.pt")
    summaries, cells = _streamed(tmp_path / "hf", tmp_path / "s", "seed{seed}/checkpoint-{step}/model*.safetensors",
                                 factory="examples.neox:tiny_gpt_neox", hooks=["gpt_neox.layers.*.mlp"],
                                 rename={"embed_out.": "lm_head."},  # how transformers saves GPT-NeoX's head
                                 probe=str(tmp_path / "probe.pt"),
                                 metrics={"names": [*PAPER_METRICS, "act_norm", "cka_prev", "dist_init_l2"]})
    assert [s["committed_steps"] for s in summaries] == [4, 4]
    arrays = store_arrays(run_path(tmp_path / "s", 1))
    assert list(arrays["step"]) == [0, 10, 20, 30]
    np.testing.assert_array_equal(arrays["weights/gpt_neox.layers.1.mlp.dense_h_to_4h.weight"][2],
                                  saved[(1, 20)]["gpt_neox.layers.1.mlp.dense_h_to_4h.weight"].numpy())
    assert arrays["activations/gpt_neox.layers.0.mlp"].shape == (4, 4, 16, 64)
    roles = RunStore(run_path(tmp_path / "s", 1), mode="r").attrs["parameter_roles"]
    assert roles["gpt_neox.embed_in.weight"] == "exclude" and roles["gpt_neox.layers.0.attention.dense.weight"] == "matrix"
    cfg = load_study(tmp_path / "s")
    assert cfg.model.class_name == "transformers.models.gpt_neox.modeling_gpt_neox.GPTNeoXForCausalLM"
    # streamed one checkpoint at a time (the activation metric against the previous checkpoint, the
    # distance from the first, across blocks) equals the metric stage on the finished stores
    streamed = xr.open_zarr(str(tmp_path / "s" / "metrics.zarr"), consolidated=False).load()
    assert cells["computed"] == 2 * 4 * len(streamed["metric"]) and bool(streamed["computed"].all())
    shutil.rmtree(tmp_path / "s" / "metrics.zarr")
    xr.testing.assert_identical(streamed.drop_vars("run_id"), _metrics(tmp_path / "s", [0, 1]).drop_vars("run_id"))
    for m in ("l2", "act_norm", "dist_init_l2"):
        assert np.isfinite(streamed["value"].sel(metric=m)).all(), m
    assert np.isnan(streamed["value"].sel(metric="cka_prev", step=0)).all()
    assert np.isfinite(streamed["value"].sel(metric="cka_prev", step=[10, 20, 30])).all()
