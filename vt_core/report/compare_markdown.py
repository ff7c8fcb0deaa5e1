"""A comparison in words: the markdown report (``OUT/report.md``, also the flow's summary
artifact) and the terminal's closing lines, from the comparison's ``analysis.json``."""

from __future__ import annotations

from vt_core.analysis.records import Analysis
from vt_core.report.narrative import closing_lines, k_evidence, k_headline, k_notes, k_uncertainty, md, num


def censored_sentence(name: str, d: dict) -> str:
    """``b converged in 0 of 8 seeds (0–32%), a in 8 of 8 (68–100%): 100 points fewer (95% interval
    ...); log-rank p = 0.0001``: non-convergence as censoring, defined however few seeds converge."""
    c = d.get("censored")
    if not c:
        return ""
    (ka, kb), (na, nb) = c["converged"], c["seeds"]

    def share(k: int, n: int, iv) -> str:
        return f"{k} of {n} seeds" + (f" ({num(100 * iv[0], 2)}–{num(100 * iv[1], 2)}%)" if iv else "")

    text = (f"{md(name)} converged in {share(kb, nb, c['share_interval'][1])}, {md(d['against'])} in "
            f"{share(ka, na, c['share_interval'][0])}")
    if c.get("share_difference") is not None:
        lo, hi = c["share_difference_interval"]
        text += (f": a difference of {num(100 * c['share_difference'], 2)} points (95% interval {num(100 * lo, 2)} "
                 f"to {num(100 * hi, 2)}{'; it excludes 0' if lo > 0 or hi < 0 else ''})")
    if c.get("log_rank_p") is not None:
        p = num(c["log_rank_p"], 2)
        text += f"; log-rank test over every seed, non-converged ones censored at their last step: p = {p}"
    return text


def difference_sentence(name: str, d: dict) -> str:
    """``b converges 215 steps later than a (95% interval 11 to 404; ratio of means 1.3, 1.01–1.6)``,
    and the censored comparison (:func:`censored_sentence`) when the means cannot be compared."""
    if d.get("difference") is None:
        head = f"{md(name)} against {md(d['against'])}: {d.get('note', 'no interval')}"
        censored = censored_sentence(name, d)
        return f"{head}. Counting non-convergence as censoring: {censored}" if censored else head
    lo, hi = d["interval"]
    way = "later" if d["difference"] > 0 else "sooner"
    verdict = ("the interval excludes 0" if d["excludes_zero"]
               else "the interval covers 0: no difference shown")
    text = (f"{md(name)} converges {num(abs(d['difference']))} steps {way} than {md(d['against'])} on average "
            f"(95% interval of the difference {num(lo)} to {num(hi)}; {verdict})")
    if d.get("ratio") is not None:
        rlo, rhi = d["ratio_interval"]
        text += f"; ratio of mean convergence steps {num(d['ratio'], 3)} ({num(rlo, 3)}–{num(rhi, 3)})"
    return text


def detour_lines(c: dict) -> list[str]:
    if not c["detours"]:
        return ["No detour state in the joint regression (no state's 95% interval lies above 0)."]
    out = []
    for d in c["detours"]:
        who = (f"specific to {md(d['specific_to'])}" if d["specific_to"]
               else f"visited by {', '.join(md(s) for s in d['studies'])}")
        lo, hi = d["interval"] or (None, None)
        out.append(f"State {d['state']} is a detour ({who}; delay per step spent there {num(lo)} to {num(hi)}, "
                   f"95% interval).")
    return out


def comparison_markdown(a: Analysis) -> str:
    """The report of a comparison (``a``: its analysis.json)."""
    c = a["comparison"]
    names, per = c["studies"], c["per_study"]
    counts = ", ".join(f"{md(n)}: {per[n]['n_seeds']}" for n in names)
    lines = [f"# vt comparison: {' vs '.join(md(n) for n in names)}", "",
             f"One HMM fitted jointly over {sum(p['n_seeds'] for p in per.values())} seeds ({counts}), features "
             f"{', '.join(md(f) for f in a['features'])}.", "",
             f"**{k_headline(a)}**: {k_evidence(a)}."]
    if u := k_uncertainty(a):
        lines.append(f"The {u}.")
    lines += [f"- {md(n)}" for n in k_notes(a) + list(a.get("comparison_notes") or [])]
    lines += ["", "## Convergence", "", "| study | seeds | converged | mean step | median | 10%–90% |",
              "|---|---|---|---|---|---|"]
    for n in names:
        v = per[n]["convergence"]
        q = v.get("quantiles") or {}
        lines.append(f"| {md(n)} | {per[n]['n_seeds']} | {v['n_converged']} | {num(v.get('mean'))} | "
                     f"{num(v.get('median'))} | {num(q.get('10'))}–{num(q.get('90'))} |")
    lines += [""] + [f"- {difference_sentence(n, d)}." for n, d in c["convergence_difference"].items()]
    lines += ["", "## States by study", "",
              "Occupancy: share of the study's checkpoints in the state; visiting: share of its seeds that stay "
              f"there for at least {c['min_visit']} checkpoints in a row.", "",
              "| state | " + " | ".join(f"occupancy {md(n)} | visiting {md(n)}" for n in names) + " | specific to |",
              "|---|" + "---|---|" * len(names) + "---|"]
    for s in range(c["k"]):
        owner = next((n for n in names if s in per[n]["specific_states"]), None)
        cells = " | ".join(f"{num(per[n]['occupancy'][s], 2)} | {num(per[n]['seeds_visiting'][s], 2)}" for n in names)
        lines.append(f"| {s} | {cells} | {md(owner) if owner else ''} |")
    lines += ["", "## Detours", ""] + detour_lines(c)
    lines += [f"- within {md(n)} alone: {per[n]['own_regression']['conclusion']}" for n in names]
    lines += ["", "The joint regression has one intercept for all seeds: where the studies' convergence differs, "
              "the study's effect enters the coefficients of the states only one study visits; read such a "
              "detour together with the convergence difference above."]
    lines += ["", "Convergence: the first checkpoint whose held-out accuracy reaches each study's threshold; "
              "intervals resample seeds within each study (2,000 draws); seeds that never converge are counted, "
              "not imputed."]
    return "\n".join(lines) + "\n"


def comparison_lines(a: Analysis) -> list[str]:
    """The terminal's closing lines."""
    c = a["comparison"]
    lines = closing_lines(a)[:-1]
    for n in c["studies"]:
        spec = c["per_study"][n]["specific_states"]
        lines.append(f"{n}: {c['per_study'][n]['convergence']['n_converged']} of {c['per_study'][n]['n_seeds']} "
                     f"seeds converged; states only it visits: {spec or 'none'}")
    lines += [difference_sentence(n, d) for n, d in c["convergence_difference"].items()]
    lines += detour_lines(c)
    return lines
