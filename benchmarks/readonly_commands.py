"""The fixed cost of vt's read-only commands (`vt status`, `vt validate STUDY`, `vt report`,
`vt export`) on a small analysed study, against the interpreter's own start in the same run
(issue 34, item 2: 12-22 s each on a loaded machine). A read-only command imports neither torch nor
Prefect: checked here too, in a process that runs `vt status` and `vt report` and lists its modules.

    python benchmarks/readonly_commands.py [--repeats 3] [--load N]

``--load N`` runs N CPU-bound processes beside it (benchmarks/load.py). The last line is one JSON
object: seconds per command (best of the repeats), the bare interpreter's, and their ratios.
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

from benchmarks.load import cpu_load  # noqa: E402

VT = [sys.executable, "-m", "flows.cli"]
COMMANDS = {"status": ["status", "{s}"], "validate": ["validate", "{s}"], "report": ["report", "{s}", "--out", "-"],
            "export": ["export", "{s}", "--out", "{tmp}/export"]}
MODULES = ("import sys, flows.cli\n"
           "for argv in (['status', sys.argv[1]], ['report', sys.argv[1], '--out', '-']):\n"
           "    try:\n        flows.cli.app(argv)\n    except SystemExit:\n        pass\n"
           "print({m: m in sys.modules for m in ('torch', 'prefect', 'bokeh', 'dask.distributed')}, file=sys.stderr)")


def make_study(root: Path) -> Path:
    """A tiny study, trained and analysed through vt_core (no Prefect), as the suite's fixture."""
    from tests.helpers import tiny_dict
    from vt_core import stages
    from vt_core.config.study_config import parse_config
    from vt_core.report.dashboard import build_dashboard
    from vt_core.stages.train import train_seed
    from vt_core.storage.study import prepare_study

    config = parse_config(tiny_dict(root / "study", hmm={"features": ["l2", "spectral", "var_w", "test_accuracy"]}))
    study = prepare_study(config)
    for seed in config.seeds:
        train_seed(study, seed)
    stages.analyse(study)
    build_dashboard(study)
    return Path(str(study))


def best_of(cmd: list[str], repeats: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load", type=int, default=0, help="CPU-bound processes running beside the benchmark")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-readonly-"))
    try:
        study = make_study(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        mods = subprocess.run([sys.executable, "-c", MODULES, str(study)], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True).stderr.strip().splitlines()[-1]
        with cpu_load(args.load):
            base = best_of([sys.executable, "-c", "pass"], args.repeats)
            seconds = {name: best_of(VT + [a.format(s=study, tmp=tmp) for a in argv], args.repeats)
                       for name, argv in COMMANDS.items()}
        for name, s in seconds.items():
            print(f"vt {name}: {s:.2f} s ({s / base:.0f}x the bare interpreter's {base:.3f} s)")
        print(f"modules imported by `vt status` and `vt report`: {mods}")
        print(json.dumps({"load_processes": args.load, "baseline_s": round(base, 3),
                          **{f"{n}_s": round(s, 2) for n, s in seconds.items()},
                          **{f"{n}_ratio": round(s / base, 1) for n, s in seconds.items()}, "imported": mods}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
