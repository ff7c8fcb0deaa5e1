"""What an analysis says, in words: the same sentences in the terminal's closing lines, the
dashboard header, the summary artifact and `vt report` (so that they never disagree), with numbers
formatted for people and names from configs escaped for markdown."""

from __future__ import annotations

import html
import math

from vt_core.analysis.change_model import sentence as change_sentence
from vt_core.analysis.phases import phases_sentence
from vt_core.analysis.records import Analysis, Bootstrap
from vt_core.analysis.selection import follows_density

#: what a missing number reads as
MISSING = "–"
#: said wherever the uncertainty of k would stand when no bootstrap was run
NO_BOOTSTRAP = "no bootstrap (hmm.bootstrap = 0): the uncertainty of k is unknown"


def num(x: float | int | None, digits: int = 3) -> str:
    """``12,345``, ``0.123``, ``1.2e-05``, or ``–`` (None, NaN)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def listed(items, empty: str = "none") -> str:
    """``1, 2, 3`` (seeds, states: no thousands separator inside a list; floats by :func:`num`), or
    ``empty``: never a Python list."""
    return ", ".join(num(x) if isinstance(x, float) else str(x) for x in items) or empty


def md(text: object) -> str:
    """A name from a config (a feature, a hookpoint) safe inside markdown: no HTML, no table break."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("`", "'")  # quotes are inert outside tags


def k_headline(a: Analysis) -> str:
    """``k = 5 (decided)`` or ``k = 8 (undetermined)``."""
    sel = a.get("selection") or {}
    return f"k = {a['chosen_k']} ({sel.get('status', 'decided')})"


def k_evidence(a: Analysis) -> str:
    """BIC's choice, the runner-up and the evidence between them."""
    sel = a.get("selection") or {}
    tried = sel.get("k_tried") or []
    grid = f"k = {min(tried)}–{max(tried)}" if tried else "the grid"
    text = f"lowest BIC over {grid}"
    if sel.get("runner_up_k") is not None:
        text += (f"; runner-up k = {sel['runner_up_k']} (BIC {num(sel.get('bic_gap_to_next'))} higher, "
                 f"BIC weight of the chosen k {_weight(sel.get('bic_weight'))})")
    if (cv_k := sel.get("cv_k")) is not None:
        best, supported = sel.get("cv_best_k"), sel.get("cv_supported") or [cv_k]
        text += (f"; cross-validated over seeds, the held-out likelihood is highest at k = {best}" +
                 (f" and within one standard error of it for k = {listed(supported)}" if supported != [best] else ""))
    elif sel.get("cv_best_k") is not None:  # analyses made before the one-standard-error rule
        text += f"; cross-validated over seeds, the held-out likelihood is highest at k = {sel['cv_best_k']}"
    return text


def _weight(w: float | None) -> str:
    """A BIC weight for people: a weight that rounds to 1 or 0 (it saturates in floating point
    when the gap is large) is said as a bound, never as a bare "1"."""
    if w is not None and w >= 0.995:
        return "> 0.99"
    if w is not None and 0 <= w < 0.005:
        return "< 0.01"
    return num(w, 2)


def seed_ranges(seeds) -> str:
    """``0–3, 5, 7–9``: seeds as runs of consecutive numbers (labels that are not numbers listed)."""
    try:
        nums = sorted({int(s) for s in seeds})
    except (TypeError, ValueError):
        return ", ".join(map(str, seeds))
    runs: list[list[int]] = []
    for s in nums:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def k_uncertainty(a: Analysis) -> str | None:
    boot = (a.get("selection") or {}).get("bootstrap") or {}
    if not boot.get("n"):
        return None
    dist = ", ".join(f"k = {k}: {num(100 * v, 2)}%" for k, v in sorted(boot["k_distribution"].items(),
                                                                        key=lambda kv: int(kv[0])))
    support = num(100 * (boot.get("chosen_k_support") or 0), 2)
    how = {"warm": ", each started from the main fit at its k", "cold": ", each fitted from scratch"}.get(
        str(boot.get("start")), "")
    return f"bootstrap over seeds ({boot['n']} resamples{how}): the chosen k in {support}% ({dist}{k_range(boot)})"


def k_range(boot: Bootstrap) -> str:
    """``; 95% range 4–6`` of the bootstrap's k, or nothing when it has none."""
    lo, hi = boot.get("k_interval") or (None, None)
    return "" if lo is None or hi is None else f"; 95% range {lo}–{hi}"


def k_notes(a: Analysis) -> list[str]:
    """Why k is undetermined, which k could not be fitted and why, and caveats of the settings."""
    sel = a.get("selection") or {}
    notes = list(sel.get("reasons") or [])
    why = sel.get("why_not") or {}
    infeasible = sorted(int(k) for k in sel.get("k_infeasible") or [])
    if infeasible:
        span = f"k = {infeasible[0]}" + (f"–{infeasible[-1]}" if len(infeasible) > 1 else "")
        notes.append(f"{span} not fitted (infeasible): at k = {infeasible[0]}, {why.get(str(infeasible[0]), '')}")
    for k in sorted(int(k) for k in sel.get("k_failed") or []):
        notes.append(f"k = {k}: every fit failed ({why.get(str(k), 'no reason recorded')})")
    if density := follows_density(sel.get("density") or []):
        notes.append(density)
    if (chg := sel.get("change")) and (change := change_sentence(chg)):
        notes.append(change)
    if sel.get("standardize") == "seed":
        notes.append("features are z-scored per seed (hmm.standardize = 'seed', as the paper does): when seeds "
                     "spend different times in a state its mean moves from seed to seed, and BIC can ask for "
                     "extra states; 'global' (the default) does not")
    return notes


def detour_sentence(a: Analysis) -> str:
    return (a.get("regression") or {}).get("conclusion") or "no detour analysis"


def closing_lines(a: Analysis) -> list[str]:
    """The analysis in a few plain lines, for the terminal."""
    lines = [f"states: {k_headline(a)}: {k_evidence(a)}"]
    if u := k_uncertainty(a):
        lines.append(f"  {u}")
    lines += [f"  note: {n}" for n in k_notes(a)]
    if phases := phases_sentence(a["phases"]) if a.get("phases") else None:
        lines.append(f"phases: {phases}")
    lines.append(f"detours: {detour_sentence(a)}")
    return lines


def header_html(a: Analysis, context: str) -> str:
    """The page's subtitle: what was studied, the number of states with its status, the evidence,
    the uncertainty and every note (the same sentences as the terminal and the report)."""
    undetermined = (a.get("selection") or {}).get("status") == "undetermined"
    style = "color:#b00020" if undetermined else ""
    parts = [html.escape(context), f"<b style='{style}'>{html.escape(k_headline(a))}</b>: {html.escape(k_evidence(a))}"]
    if u := k_uncertainty(a):
        parts.append(html.escape(u))
    phases = phases_sentence(a["phases"]) if a.get("phases") else None
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in k_notes(a) + ([f"phases: {phases}"] if phases else []))
    return " · ".join(parts) + (f"<ul style='margin:4px 0;font-size:12px'>{notes}</ul>" if notes else "")
