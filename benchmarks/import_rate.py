"""`vt import` rate and memory: a GPT-NeoX-style series (transformers, built locally; Hugging Face
saves with safetensors shards, one folder per step, as PolyPythias publishes them) imported into a
study, in a child process whose peak memory (VmHWM) is read against the size of one checkpoint.

    python benchmarks/import_rate.py [--hidden 256] [--layers 4] [--steps 12]

The last line printed is one JSON object: GB of weights imported per second (weights only, and with
the activations of every layer's MLP on a probe of 8 x 64 tokens), and the peak memory over the
baseline (torch and transformers imported, the model built once), in checkpoints; then the import
with its metrics computed as the checkpoints come in (the import flow's way) against the import
followed by the metric stage, which reads the store again (``stream_ratio``: with the store still in
the page cache; ``stream_ratio_cold``: evicted first, as a series far larger than memory leaves it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(1)
from pathlib import Path
from benchmarks.capture_overhead import vm_hwm_mb
from vt_core.stages.import_checkpoints import import_seed, merged, plan_import
from vt_core.stages import metrics as M
src, study, mode = Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
from examples.neox import tiny_gpt_neox
_model = tiny_gpt_neox(**json.loads(sys.argv[5]))  # transformers imported and one model built: the baseline
del _model
import dask.array, xarray, vt_core.metrics.compute  # noqa: E401,F401  (and the metric stage's libraries)
base = vm_hwm_mb()
opts = dict(factory="examples.neox:tiny_gpt_neox", kwargs=json.loads(sys.argv[5]), rename={"embed_out.": "lm_head."})
if mode == "activations":
    torch.save(torch.randint(0, 1000, (8, 64)), study.parent / "probe.pt")
    opts.update(hooks=["gpt_neox.layers.*.mlp"], probe=str(study.parent / "probe.pt"))


def evict(path):
    # the store out of the page cache, as a series far larger than memory leaves it by the time
    # the metric stage reads it (posix_fadvise DONTNEED drops clean pages: the files are synced)
    for f in Path(path).rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


t = time.perf_counter()
plan = plan_import(src, study, "checkpoint-{step}/model*.safetensors", **opts)
cks = plan["seeds"]["0"]
out = {}
if mode == "stream":  # the import flow's passes: the first checkpoint, the plan, the rest with metrics
    first = import_seed(study, 0, cks, plan["probe"], limit=1)
    mplan = M.plan_metrics(study, [0], [step for step, _ in cks])
    s = merged(first, import_seed(study, 0, cks, plan["probe"], metrics=mplan))
    M.finalize_metrics(study, mplan, [s["metrics"]])
    out["cells"] = s["metrics"]["computed"]
else:
    s = import_seed(study, 0, cks, plan["probe"])
if mode in ("then", "then_cold"):  # import, then the metric stage reading the store again
    out["import_s"] = time.perf_counter() - t
    if mode == "then_cold":
        t_evict = time.perf_counter()
        evict(study / "runs")
        t += time.perf_counter() - t_evict  # not counted
    mplan = M.plan_metrics(study, [0])
    c = M.compute_metrics(study, 0, mplan)
    M.finalize_metrics(study, mplan, [c])
    out["cells"] = c["computed"]
print(json.dumps({"seconds": time.perf_counter() - t, "checkpoints": s["committed_steps"],
                  "peak_rss_mb": vm_hwm_mb(), "rss_before_mb": base, **out}))
"""


def make_series(out: Path, steps: int, model_kwargs: dict) -> float:
    """Saves of one run (shards of 10 MB); returns the size of one checkpoint in MB."""
    sys.path.insert(0, str(ROOT))
    import torch

    from examples.neox import tiny_gpt_neox

    torch.manual_seed(0)
    model = tiny_gpt_neox(**model_kwargs)
    for i in range(steps):
        model.save_pretrained(out / f"checkpoint-{i * 100}", max_shard_size="10MB")
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
    size = sum(f.stat().st_size for f in (out / "checkpoint-0").glob("*.safetensors"))
    return size / 2**20


def run(src: Path, tmp: Path, mode: str, model_kwargs: dict) -> dict:
    study = tmp / f"study-{mode}"
    res = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(src), str(study), mode,
                          json.dumps(model_kwargs)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if res.returncode:
        raise SystemExit(f"{mode}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    shutil.rmtree(study)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    model_kwargs = {"hidden_size": args.hidden, "num_hidden_layers": args.layers, "num_attention_heads": 4,
                    "intermediate_size": 4 * args.hidden, "vocab_size": args.vocab}
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-import-"))
    try:
        ckpt_mb = make_series(tmp / "hf", args.steps, model_kwargs)
        plain, acts = run(tmp / "hf", tmp, "weights", model_kwargs), run(tmp / "hf", tmp, "activations", model_kwargs)
        # metrics: computed as the checkpoints come in, against the metric stage after the import
        # (its store still in the page cache, and evicted from it as at the scale of a real series)
        stream, then = run(tmp / "hf", tmp, "stream", model_kwargs), run(tmp / "hf", tmp, "then", model_kwargs)
        cold = run(tmp / "hf", tmp, "then_cold", model_kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gb = ckpt_mb * args.steps / 1024
    for name, r in (("weights", plain), ("weights+activations", acts)):
        print(f"{name}: {args.steps} checkpoints of {ckpt_mb:.1f} MB in {r['seconds']:.1f} s = "
              f"{gb / r['seconds']:.3f} GB/s; peak RSS {r['peak_rss_mb']:.0f} MB ({r['rss_before_mb']:.0f} MB before)")
    for name, r in (("import with metrics as they come", stream), ("import, then metrics", then),
                    ("import, then metrics (store evicted)", cold)):
        print(f"{name}: {r['seconds']:.1f} s, {r['cells']:,} cells; peak RSS {r['peak_rss_mb']:.0f} MB "
              f"({(r['peak_rss_mb'] - r['rss_before_mb']) / ckpt_mb:.2f} checkpoints over the baseline)")
    over = lambda r: round((r["peak_rss_mb"] - r["rss_before_mb"]) / ckpt_mb, 2)  # noqa: E731
    print(json.dumps({
        "checkpoint_mb": round(ckpt_mb, 1), "checkpoints": args.steps, "gb": round(gb, 3),
        "gb_per_s": round(gb / plain["seconds"], 4), "gb_per_s_with_activations": round(gb / acts["seconds"], 4),
        "s_per_gb": round(plain["seconds"] / gb, 1),
        "peak_rss_mb": round(plain["peak_rss_mb"], 1), "peak_rss_mb_with_activations": round(acts["peak_rss_mb"], 1),
        "rss_before_mb": round(plain["rss_before_mb"], 1),
        "peak_over_before_in_checkpoints": over(plain),
        "stream_s": round(stream["seconds"], 2), "then_s": round(then["seconds"], 2),
        "then_cold_s": round(cold["seconds"], 2), "then_import_s": round(then["import_s"], 2),
        "stream_ratio": round(stream["seconds"] / then["seconds"], 3),
        "stream_ratio_cold": round(stream["seconds"] / cold["seconds"], 3),
        "peak_over_before_in_checkpoints_stream": over(stream), "peak_over_before_in_checkpoints_then": over(then),
        "loadavg_1min": round(os.getloadavg()[0], 2), "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
