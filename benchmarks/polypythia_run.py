"""A PolyPythia-sized series through `vt import` and `vt analyze`, a seed at a time (issue 31, item 1).

10 seeds x 20 checkpoints of Pythia-160M do not fit this machine twice (the Hub's Pythia saves are
float16, 325 MB a checkpoint: 65 GB of source, and the study stores them again, 65 GB), so the
series is written the way a user short of disk downloads PolyPythias: one seed's checkpoints
(`benchmarks/pythia_series.py`, float16 as the Hub's saves are), `vt import SOURCE STUDY --pattern
'seed{seed}/step{step}' --no-analyze` (which extends the study by the seeds it finds), the seed's
source deleted, the next seed. Then `vt analyze STUDY`, `vt status STUDY`, `vt validate STUDY` and `vt
analyze` again (nothing to do) on the whole study. Every command runs as a user runs it
(the `vt` entry point, a fresh process); its wall time and peak resident memory are measured.

    python benchmarks/polypythia_run.py [--size 160m] [--seeds 10] [--checkpoints 20] [--out DIR] [--keep]

Not in `make bench`: it needs the study's disk (checked before anything is written: 72 GB at the
defaults) and about an hour on 2 cores. The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VT = str(Path(sys.executable).with_name("vt"))
PATTERN = "seed{seed}/step{step}"


def _vt(*args: str) -> dict:
    """One `vt` command in a fresh process: its wall time, peak RSS (MB) and output's last lines."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen([VT, *args], stdout=so, stderr=se, text=True, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)  # this command's own rusage (KB), its waited-for children's included
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        so.seek(0), se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode:
        raise SystemExit(f"vt {' '.join(args)} failed ({proc.returncode}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return {"seconds": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "tail": stdout.strip().splitlines()[-8:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="160m")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--checkpoints", type=int, default=20)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the study (deleted at the end otherwise)")
    args = ap.parse_args()
    from benchmarks.pythia_series import checkpoint_bytes, write_series

    ckpt = checkpoint_bytes(args.size, args.dtype)
    need = ckpt * args.checkpoints * (args.seeds + 1) * 1.02  # the study and one seed's source, 2% over
    out = args.out or Path(tempfile.mkdtemp(prefix="vt-polypythia-"))
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    if free < need:
        raise SystemExit(f"{out}: {free / 1e9:.0f} GB free, {need / 1e9:.0f} GB needed for {args.seeds} seeds x "
                         f"{args.checkpoints} checkpoints at {args.size}; free space or pass --out on a larger disk")
    source, study = out / "source", out / "study"
    steps = [0, *range(1000, 1000 * args.checkpoints, 1000)][:args.checkpoints]
    seeds = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        write_series(source, args.size, [seed], steps, args.dtype)
        gen_s = time.perf_counter() - t
        imp = _vt("import", str(source), str(study), "--pattern", PATTERN, "--no-analyze")
        shutil.rmtree(source / f"seed{seed}")
        seeds.append({"seed": seed, "generate_s": round(gen_s, 1), "import_s": imp["seconds"],
                      "import_peak_rss_mb": imp["peak_rss_mb"]})
        print(json.dumps(seeds[-1]), flush=True)
    store_gb = sum(f.stat().st_size for f in study.rglob("*") if f.is_file()) / 1e9
    analyze = _vt("analyze", str(study))
    print("\n".join(analyze["tail"]), flush=True)
    status = _vt("status", str(study))
    validate = _vt("validate", str(study))
    again = _vt("analyze", str(study))  # nothing changed: what was verified stays verified
    verdict = json.loads((study / "analysis.json").read_text())
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    n = args.seeds * args.checkpoints
    imports = [s["import_s"] for s in seeds]
    print(json.dumps({
        "size": args.size, "dtype": args.dtype, "seeds": args.seeds, "checkpoints": args.checkpoints,
        "checkpoint_mb": round(ckpt / 2**20, 1), "store_gb": round(store_gb, 2),
        "import_s_per_checkpoint": round(sum(imports) / n, 2),
        "generate_s_per_checkpoint": round(sum(s["generate_s"] for s in seeds) / n, 2),
        "import_peak_rss_mb": max(s["import_peak_rss_mb"] or 0 for s in seeds),
        "analyze_s": analyze["seconds"], "status_s": status["seconds"], "validate_s": validate["seconds"],
        "analyze_again_s": again["seconds"], "k": verdict["chosen_k"], "k_status": verdict["selection"]["status"], "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
