"""Live decoding's cost on training (issue 32: target <= 1.05): the demo's training, bare and with
the live watcher decoding every committed checkpoint beside it, in one run.

The reference is the demo study itself (examples/sparse_parity.toml: 8 seeds, trained and
analysed first, k decided). Then ``--seeds`` seeds of the same config are trained into fresh
studies the way a `vt run` task trains them (``train_group``: one batched model, torch on one
thread, the writer process), *bare* and *live* interleaved ``--repeats`` times: *live* starts the
watcher process (``watcher_command``: nice 19 once it has read the reference, as the study flow
does) before training
and tells it training has ended after. The ratio is of training's wall time (best of the repeats);
``drain_s`` is how long the watcher took after training to decode the last commits and stop.
``--load N`` runs N CPU-bound processes beside it (a shared machine).

    python benchmarks/live_overhead.py [--seeds 4] [--repeats 2] [--load 0]

The last line printed is one JSON object with the figures.
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
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import cpu_load  # noqa: E402
from vt_core.config.study_config import load_config, parse_config  # noqa: E402
from vt_core.stages.live import watcher_command  # noqa: E402
from vt_core.stages.train import train_group  # noqa: E402
from vt_core.storage.study import prepare_study  # noqa: E402

DEMO = ROOT / "examples" / "sparse_parity.toml"


def reference(where: Path) -> Path:
    """The demo study, trained and analysed (vt_core alone)."""
    from vt_core import stages

    config = parse_config(load_config(DEMO).model_dump(mode="json") | {"output_dir": str(where)})
    study = prepare_study(config)
    train_group(study, list(config.seeds))
    stages.analyse(study)
    return Path(str(study))


def train(where: Path, seeds: int, ref: Path | None) -> tuple[float, float, int]:
    """(training seconds, watcher drain seconds, events decoded)."""
    config = parse_config(load_config(DEMO).model_dump(mode="json") | {"output_dir": str(where),
                                                                        "seeds": list(range(100, 100 + seeds))})
    study = prepare_study(config)
    watcher = None
    if ref is not None:
        watcher = subprocess.Popen(watcher_command(str(study), str(ref)), stdin=subprocess.PIPE, cwd=ROOT)
    t = time.perf_counter()
    train_group(study, list(config.seeds), num_threads=1)  # as a `vt run` task trains them
    trained = time.perf_counter() - t
    drain, events = 0.0, 0
    if watcher is not None:
        during = _cpu_seconds(watcher.pid)
        t = time.perf_counter()
        watcher.stdin.close()
        _, _, usage = os.wait4(watcher.pid, 0)
        watcher.returncode = 0
        drain = time.perf_counter() - t
        print(f"  watcher CPU {usage.ru_utime + usage.ru_stime:.1f} s ({during:.1f} s while training)", flush=True)
        events = len(json.loads((where / "live.json").read_text())["events"])
    return trained, drain, events


def _cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far (user + system, all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--load", type=int, default=0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vt-live-bench-"))
    try:
        t = time.perf_counter()
        ref = reference(tmp / "reference")
        chosen = json.loads((ref / "hmm" / "selection.json").read_text())
        print(f"reference: the demo, k = {chosen['chosen_k']} ({chosen['status']}), {time.perf_counter() - t:.0f} s",
              flush=True)
        bare, live, drains, events = [], [], [], []
        with cpu_load(args.load):
            for r in range(args.repeats):
                for mode in (("bare", "live") if r % 2 == 0 else ("live", "bare")):
                    where = tmp / f"{mode}-{r}"
                    s, d, n = train(where, args.seeds, ref if mode == "live" else None)
                    (live if mode == "live" else bare).append(s)
                    if mode == "live":
                        drains.append(d)
                        events.append(n)
                    print(f"{mode} {r}: training {s:.1f} s" + (f", drain {d:.1f} s, {n} events" if mode == "live"
                                                                else ""), flush=True)
                    shutil.rmtree(where)
        out = {"ratio": round(min(live) / min(bare), 3), "median_ratio": round(median(live) / median(bare), 3),
               "baseline_s": round(min(bare), 2),
               "live_s": round(min(live), 2), "drain_s": round(max(drains), 2), "events": events[0],
               "seeds": args.seeds, "repeats": args.repeats, "load": args.load,
               "bare_all_s": [round(x, 2) for x in bare], "live_all_s": [round(x, 2) for x in live]}
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
