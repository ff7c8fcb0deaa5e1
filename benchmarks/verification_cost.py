"""What verifying a study costs, against the analysis it protects, on the paper-size study.

The study of ``benchmarks/analysis_scale.py`` (40 seeds x 166 checkpoints of the paper's modular-
addition transformer, written through ``RunStore``). Timed in one run:

- baseline: the analysis without an orchestrator (``stages.analyse``, one process, from a fresh
  metrics.zarr), as ``vt analyze`` runs it;
- ``full``: what ``vt run`` does before it reuses anything: every seed's store read back in full
  with its checksums (``store_problems(read=True)``) plus metrics.zarr and the analysis files
  (``check_derived``), i.e. what ``vt validate STUDY`` reads;
- ``cheap``: the check without reading chunks (attributes, metadata, every chunk present, resume
  trailers);
- ``again``: the full check a second time, with the manifests of verified chunks the first wrote
  (issue 31, item 5: only what changed is read back), and a no-op ``vt run CONFIG`` in a fresh
  process (it must find nothing to do: no Prefect, no training);
- the damage trials of the manifest: a chunk touched (read back and passed), a chunk's body changed
  with its size, modification time and stored CRC32C restored (missed by the stamps, as documented;
  found by the ``--full`` check), a row rewritten through zarr (found by the default check).

    python benchmarks/verification_cost.py [--seeds 40] [--checkpoints 166]

The last line printed is one JSON object (``ratio``: the full verification's time over the analysis's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.analysis_scale import clear_analysis, config  # noqa: E402
from benchmarks.metrics_throughput import make_study  # noqa: E402
from vt_core import stages  # noqa: E402
from vt_core.storage.output_integrity import check_derived  # noqa: E402
from vt_core.storage.study import load_study, store_problems  # noqa: E402


def verify(study: Path, read: bool) -> tuple[float, int]:
    t = time.perf_counter()
    cfg = load_study(study)
    problems = [p for s in cfg.seeds for p in store_problems(study, s, cfg, read=read)]
    if read:
        problems += check_derived(study)
    return time.perf_counter() - t, len(problems)


def noop_run(study: Path, tmp: Path) -> float:
    """``vt run CONFIG`` on the finished, analysed study, in a fresh process: it must say there is
    nothing to do."""
    import subprocess

    from tests.helpers import write_toml
    from vt_core.report.dashboard import build_dashboard

    build_dashboard(study)  # what a `vt run` leaves beside the analysis
    toml = write_toml(load_study(study).model_dump(mode="json", by_alias=True, exclude_none=True), tmp / "config.toml")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--quiet", "run", str(toml)], capture_output=True,
                         text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - t
    if out.returncode or "nothing to do" not in out.stdout + out.stderr:
        raise SystemExit(f"the no-op run did something:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return seconds


def damage_trials(study: Path) -> dict[str, bool]:
    """Each kind of change behind vt's back, and whether the check meant to find it does."""
    import os

    import zarr

    cfg = load_study(study)
    run = study / "runs" / "seed=0000.zarr"
    chunks = sorted((p for p in (run / "weights").rglob("*") if p.is_file() and p.name != "zarr.json"),
                    key=lambda p: (-p.stat().st_size, str(p)))
    out = {}
    st = chunks[0].stat()
    os.utime(chunks[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    out["touched chunk passes (read back)"] = store_problems(study, 0, cfg, read=True) == []
    st = chunks[1].stat()
    data = bytearray(chunks[1].read_bytes())
    data[len(data) // 2] ^= 0x10
    chunks[1].write_bytes(bytes(data))
    os.utime(chunks[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    out["body changed, stamp restored: found by --full"] = bool(store_problems(study, 0, cfg, read=True, full=True))
    data[len(data) // 2] ^= 0x10
    chunks[1].write_bytes(bytes(data))
    name = sorted(n for n, _ in zarr.open_group(str(run), mode="r")["weights"].arrays())[0]
    arr = zarr.open_group(str(run), mode="r+")["weights"][name]
    arr[1] = arr[2]
    out["row rewritten: found by the default check"] = bool(store_problems(study, 0, cfg, read=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--checkpoints", type=int, default=166)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-bench-verify-"))
    try:
        study = tmp / "study"
        make_study(study, args.seeds, args.checkpoints, config(study, args.seeds))
        nbytes = sum(p.stat().st_size for p in (study / "runs").rglob("*") if p.is_file())
        clear_analysis(study)
        t = time.perf_counter()
        stages.analyse(study, workers=1)
        analyse_s = time.perf_counter() - t
        full_s, n_full = verify(study, read=True)
        cheap_s, n_cheap = verify(study, read=False)
        again_s, n_again = verify(study, read=True)
        noop_s = noop_run(study, tmp)
        print(f"analysis {analyse_s:.1f} s; full verification {full_s:.1f} s ({nbytes / 1e9:.2f} GB of stores, "
              f"{n_full} problems); cheap check {cheap_s:.2f} s; again with the manifests {again_s:.2f} s; "
              f"a no-op `vt run` {noop_s:.1f} s", flush=True)
        if n_full or n_cheap or n_again:
            raise SystemExit("an intact study was reported damaged")
        trials = damage_trials(study)
        print(f"damage trials: {trials}", flush=True)
        if not all(trials.values()):
            raise SystemExit(f"damage missed: {trials}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"ratio": round(full_s / analyse_s, 3), "baseline_s": round(analyse_s, 1),
                      "vt_s": round(full_s, 1), "cheap_check_s": round(cheap_s, 2),
                      "cheap_ratio": round(cheap_s / analyse_s, 4),
                      "again_s": round(again_s, 2), "noop_run_s": round(noop_s, 2), "damage_found": sum(trials.values()),
                      "damage_trials": len(trials), "store_gb": round(nbytes / 1e9, 3),
                      "seeds": args.seeds, "checkpoints": args.checkpoints}))


if __name__ == "__main__":
    main()
