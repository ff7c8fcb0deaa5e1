"""The closing summary of `vt run` / `vt analyze` (and of a run with nothing to do): per-seed
outcome, the chosen k with its status and uncertainty, the warnings that matter, where the
dashboard and the report are, and the next command when something needs attention."""

from __future__ import annotations

from vt_core.report.narrative import closing_lines
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location
from vt_core.storage.seed_status import resume_command, seed_status, seeds_by_status, study_state


def _outcomes(rows: list[dict]) -> str:
    by = seeds_by_status(rows)
    order = ["complete", "diverged", "stopped-early", "failed", "interrupted", "missing", "damaged", "running", "queued"]
    parts = [f"{len(by[s])} {s}" + (f" ({', '.join(map(str, by[s]))})" if s != "complete" else "")
             for s in order if s in by]
    return "seeds: " + ", ".join(parts)


def closing_summary(study: str | Location) -> list[str]:
    """A few plain lines (no markup): what happened and what to do next."""
    from vt_core.analysis.records import load_analysis

    study = location(study)
    rows = seed_status(study)
    state, hints = study_state(rows, resume_command(study))
    lines = [_outcomes(rows)]
    a = None
    if layout(study).analysis.is_file():
        a = load_analysis(study)
        lines += closing_lines(a)
        conv = a.get("convergence_step") or {}
        unmeasured = [int(s) for s in a.get("accuracy_unrecorded") or []]
        never = sorted(int(s) for s, c in conv.items() if c is None and int(s) not in unmeasured)
        if never:
            lines.append(f"  warning: seeds {', '.join(map(str, never))} never reached held-out accuracy "
                         f"{a.get('convergence_threshold')}; they are in the states but not in the detour regression")
        if unmeasured:
            lines.append(f"  note: seeds {', '.join(map(str, unmeasured))} have no held-out accuracy (no test_accuracy "
                         f"was recorded), so no convergence step; they are in the states but not in the detour regression")
    if layout(study).dashboard.is_file():
        lines.append(f"dashboard: {layout(study).dashboard}  (`vt dashboard {study} --open`)")
    lines.append(f"report: `vt report {study}` writes {layout(study).report}")
    steps = [h.replace("STUDY", str(study)) for h in hints]
    if a is not None and (a.get("selection") or {}).get("status") == "undetermined":
        steps.append("k is undetermined: more seeds or checkpoints (or fewer hmm.features) would decide it")
    if state == "complete" and not hints:
        steps.append(f"`vt dashboard {study} --open` to explore the states, `vt report {study}` to compare "
                     f"with the paper")
    if steps:  # one "next:", each step on its own line under it
        lines += [f"next: {steps[0]}"] + [f"      {s}" for s in steps[1:]]
    return lines
