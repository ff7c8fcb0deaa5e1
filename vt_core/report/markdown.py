"""Markdown of ``analysis.json``, in one place: the study's summary (the flow's artifact) and
`vt report` (the study beside the paper's results, Hu et al. 2024; REFERENCE.md)."""

from __future__ import annotations

from vt_core.analysis.phases import phases_sentence
from vt_core.analysis.records import Analysis, SelectionSummary, Transition, load_analysis
from vt_core.config.study_config import StudyConfig
from vt_core.report.figures.graph import state_graph_data_uri
from vt_core.report.narrative import (
    MISSING,
    NO_BOOTSTRAP,
    detour_sentence,
    k_evidence,
    k_headline,
    k_notes,
    k_uncertainty,
    listed,
    md,
    num,
)
from vt_core.storage.handle import Study, StudyRef
from vt_core.storage.location import Location

# REFERENCE.md, "Reference settings and results (paper, 40 seeds each)"
PAPER = {
    "modular_addition": {"setting": "modular addition p=113, 1-layer transformer, no LayerNorm, batch 2048",
                         "k": 6, "detours": "yes", "threshold": 0.9},
    "modular_addition_stabilised": {"setting": "modular addition + LayerNorm, batch 256", "k": 3,
                                    "detours": "no", "threshold": 0.9},
    "sparse_parity": {"setting": "sparse parity 40 bits / 3 relevant, MLP, SGD, hinge", "k": 6,
                      "detours": "not stated", "threshold": 0.9},
    "cifar100_resnet18": {"setting": "CIFAR-100, ResNet-18, AdamW 1e-3, batch 256", "k": 5,
                          "detours": "not stated", "threshold": 0.6},
    "cifar100_resnet18_destabilised": {"setting": "CIFAR-100, ResNet-18 without BN and residuals", "k": 5,
                                       "detours": "yes", "threshold": 0.6},
    "mnist_mlp": {"setting": "MNIST, MLP 784-800-10", "k": 6, "detours": "not stated", "threshold": 0.97},
}


def paper_setting(config: StudyConfig) -> str | None:
    """The paper setting a study's config is, by what it trains (task, model, optimiser, and the
    switches that tell the paper's variants apart), whatever the study is called; None when it is
    none of them (a study vt did not train: its optimiser is unknown)."""
    if config.external:
        return None
    m, d, opt = config.model, config.data, config.optimizer.name
    if d.name == "modular_addition" and m.name == "transformer" and opt == "adamw":
        return "modular_addition_stabilised" if getattr(m, "layer_norm", False) else "modular_addition"
    if d.name == "sparse_parity" and m.name == "mlp" and opt == "sgd" and config.training.loss == "hinge":
        return "sparse_parity"
    if d.name == "cifar100" and m.name == "resnet" and opt == "adamw":
        norm, skip = getattr(m, "batch_norm", True), getattr(m, "residual", True)
        return "cifar100_resnet18" if norm and skip else "cifar100_resnet18_destabilised" if not (norm or skip) else None
    if d.name == "mnist" and m.name == "mlp":
        return "mnist_mlp"
    return None


#: the task's own sizes in the paper's settings (Hu et al. 2024, section 4)
PAPER_TASK = {"sparse_parity": {"n_bits": 40, "k": 3}, "modular_addition": {"p": 113},
              "modular_addition_stabilised": {"p": 113}}


def states_table(a: Analysis) -> list[str]:
    """The markdown table of states that the summary and the report share."""
    lines = ["| state | occupancy | mean first step | steps | seeds visiting | stability (bootstrap) | detour |",
             "|---|---|---|---|---|---|---|"]
    for s in a["states"]:
        lines.append(f"| {s['state']} | {s['occupancy']:.2f} | {num(s['first_step_mean'])} | "
                     f"{num(s['step_min'])}–{num(s['step_max'])} | {len(s['seeds'])} | {num(s.get('stability'), 2)} | "
                     f"{'yes' if s.get('detour') else ''} |")
    return lines


def transition_features(t: Transition) -> str:
    """The top features of a transition two ways: the paper's gradient ranking, and the largest
    changes in units of the within-state standard deviation."""
    by_grad = ", ".join(f"{md(f['feature'])} ({f['sd_change']:+.2g} sd)" for f in t["top_features"][:3])
    by_sd = ", ".join(f"{md(f['feature'])} ({f['sd_change']:+.2g} sd)" for f in t.get("top_by_sd_change", [])[:3])
    return f"by the paper's gradient: {by_grad}; largest moves in within-state sd: {by_sd}"


def _epoch_of(study: Location):
    """step -> epoch, from the study's recorded checkpoints (the same schedule for every seed)."""
    import numpy as np

    from vt_core.metrics.store import open_metrics

    ds = open_metrics(study)
    steps, epochs = ds["step"].values, ds["epoch"].isel(seed=0).values
    ok = np.isfinite(epochs)
    if ok.sum() < 2:
        return lambda step: None
    return lambda step: None if step is None else float(np.interp(step, steps[ok], epochs[ok]))


def _at(step, epoch_of) -> str:
    epoch = epoch_of(step)
    return f"step {num(step)}" + ("" if epoch is None else f" (epoch {num(epoch)})")


def _differences(ref: dict | None, config, sel: SelectionSummary) -> str:
    """How this study's settings differ from the paper's, when k is put beside the paper's."""
    if not ref:
        return ""
    diffs = []
    for field, value in PAPER_TASK.get(paper_setting(config) or "", {}).items():
        if getattr(config.data, field, value) != value:
            diffs.append(f"data.{field} = {getattr(config.data, field)}, not {value}")
    if len(config.seeds) != 40:
        diffs.append(f"{len(config.seeds)} seeds, not 40")
    if (sel.get("covariance") or config.hmm.covariance) != "full":
        diffs.append(f"covariance {sel.get('covariance') or config.hmm.covariance!r}, not 'full'")
    if (sel.get("standardize") or config.hmm.standardize) != "seed":
        diffs.append("global standardisation, not per seed (vt's default; per seed inflates k)")
    if config.metrics.convention != "paper_code":
        diffs.append(f"metrics under {config.metrics.convention!r}, not the paper's code")
    return ("Differs from the paper's setting in: " + "; ".join(diffs) + ".") if diffs else ""


def report_markdown(study: StudyRef) -> str:
    study = Study.open(study)
    config = study.config
    a = load_analysis(study)
    key = paper_setting(config)
    ref = PAPER.get(key) if key else None
    epoch_of = _epoch_of(study)
    reg = a.get("regression") or {}
    sel = a.get("selection") or {}
    r2 = reg.get("r2")
    conv = [c for c in a["convergence_step"].values() if c is not None]
    rows = [
        ("setting", ref["setting"] if ref else "(no paper setting matches this study's name)", config.name),
        ("seeds", "40", str(len(config.seeds))),
        ("metric convention", "paper_code (the paper's published code)", config.metrics.convention),
        ("k chosen" + (" (the paper's procedure)" if sel.get("bic_k") is not None else " (lowest BIC)"),
         str(ref["k"]) if ref else MISSING, f"{k_headline(a)}: {k_evidence(a)}"),
        ("k by each criterion", "held-out BIC, mean of 5 fits (its code)", criteria_line(sel)),
        ("uncertainty on k", "not given", k_uncertainty(a) or NO_BOOTSTRAP),
        ("standardisation", "per seed (z-scored each seed)", sel.get("standardize") or config.hmm.standardize),
        ("covariance", "full", sel.get("covariance") or config.hmm.covariance),
        ("detour states", ref["detours"] if ref else MISSING, listed(a.get("detour_states") or [])),
        ("detour regression", "convergence time on time in each state (not identifiable)", detour_sentence(a)
         + ("" if r2 is None else f"; R^2 = {num(r2)} over {reg.get('n')} converged seeds")),
        ("convergence threshold (held-out acc.)", str(ref["threshold"]) if ref else MISSING,
         f"{num(a['convergence_threshold'])}; {len(conv)} of {len(a['convergence_step'])} seeds reach it"
         + (f" (no accuracy recorded for {len(a['accuracy_unrecorded'])})" if a.get("accuracy_unrecorded") else "")),
    ]
    lines = [f"# vt report: `{config.name}`", "", "| | paper | this study |", "|---|---|---|"]
    # every cell is escaped: names from configs and plugins (features, layers, hookpoints) may hold
    # markup that a markdown renderer would make live
    lines += [f"| {name} | {md(p)} | {md(o)} |" for name, p, o in rows]
    if diff := _differences(ref, config, sel):
        lines += ["", diff]
    if notes := k_notes(a):
        lines += ["", *[f"- {md(n)}" for n in notes]]
    lines += ["", "## States", "", *states_table(a)]
    lines += phases_table(a) + density_rows(a)
    if conv:
        lines += ["", "## Where the transitions fall", "",
                  f"Median convergence: {_at(sorted(conv)[len(conv) // 2], epoch_of)}."]
        for t in a["transitions"]:
            to = next(s for s in a["states"] if s["state"] == t["to"])
            lines.append(f"- {t['from']} → {t['to']}: state {t['to']} is first entered at "
                         f"{_at(to['first_step_mean'], epoch_of)} on average; " + transition_features(t))
    return "\n".join(lines) + "\n"


def criteria_line(sel: SelectionSummary) -> str:
    """vt's criteria and the paper's procedure side by side: ``BIC 8; cross-validated 2; bootstrap
    6; the paper's procedure 8``."""
    c = sel.get("criteria") or {}
    names = {"bic": "BIC (best of restarts, training seeds)", "cv": "cross-validated (one-SE rule)",
             "bootstrap": "bootstrap mode", "paper": "the paper's procedure (mean held-out BIC, 5 fits, 80/20 runs)"}
    parts = [f"{names[key]} {MISSING if c.get(key) is None else c[key]}" for key in names if key in c]
    return "; ".join(parts) or MISSING


def density_rows(a: Analysis) -> list[str]:
    """``## k against the amount of data`` (``hmm.density_check``): k by BIC on all the data and on less."""
    table = (a.get("selection") or {}).get("density") or []
    if len(table) < 2:
        return []
    return ["", "## k against the amount of data", "", "| data | k (lowest BIC) |", "|---|---|",
            *[f"| {md(t['data'])} | {t['k']} |" for t in table]]


def phases_table(a: Analysis) -> list[str]:
    """``## Phases``: the boundary into each state (median step, 95% range over seeds) when every
    seed visits the states in one order; nothing otherwise."""
    ph = a.get("phases")
    sentence = phases_sentence(ph) if ph else None
    if not ph or sentence is None:
        return []
    head = sentence.split(":")[0]
    lines = ["", "## Phases", "", md(head[:1].upper() + head[1:]) + ": the states mark progress along one path "
             "rather than distinct regimes.", "", "| boundary | median step | 95% range over seeds | seeds crossing |",
             "|---|---|---|---|"]
    lines += [f"| {b['into'] - 1} → {b['into']} | {num(b['median'])} | {num(b['low'])}–{num(b['high'])} | "
              f"{b['n_seeds']} |" for b in ph["boundaries"]]
    return lines


def converged_at(a: Analysis, seed: int) -> str:
    """A seed's convergence step; ``never`` for an analysed seed that does not converge, ``–`` for
    a seed the analysis does not hold."""
    conv = a["convergence_step"]
    if str(seed) not in conv:
        return MISSING
    if int(seed) in (a.get("accuracy_unrecorded") or []):
        return "no accuracy recorded"
    return "never" if conv[str(seed)] is None else f"step {num(conv[str(seed)])}"


def analysis_markdown(a: Analysis, title: str) -> list[str]:
    """The analysis in markdown, under ``title``: chosen k with its status and uncertainty, a small
    PNG of the state graph (data URI), states, key transitions, convergence and detours. A study's
    summary adds its seeds; a table's report (`vt states`) is this alone."""
    lines = [title, "", f"**Number of states: {md(k_headline(a))}**: {md(k_evidence(a))} "
                        f"({len(a['features'])} features).", ""]
    if u := k_uncertainty(a):
        lines += [f"Uncertainty: {md(u)}.", ""]
    lines += [f"> {md(n)}" for n in k_notes(a)]
    lines += ["", "## State graph", "",
              f"![State graph: left to right by first visit, size by occupancy, edge width by seeds]"
              f"({state_graph_data_uri(a)})", "", "## States", "", *states_table(a)]
    lines += phases_table(a) + density_rows(a)
    lines += ["", "## Transitions", ""]
    for t in a["transitions"]:
        lines.append(f"- {t['from']} → {t['to']} (p = {num(t['prob'])}, {t['n_seeds']} seeds): " + transition_features(t))
    lines += ["", "## Convergence and detours", "",
              f"- held-out accuracy >= {num(a['convergence_threshold'])}: "
              f"{sum(c is not None for c in a['convergence_step'].values())} of {len(a['convergence_step'])} seeds"
              + (f" (no accuracy recorded for {len(a['accuracy_unrecorded'])})" if a.get("accuracy_unrecorded") else ""),
              f"- detours: {md(detour_sentence(a))}",
              f"- trajectory dissimilarity (mean pairwise Wasserstein): {num(a.get('trajectory_dissimilarity'))}",
              f"- unusual seeds: {listed(a.get('unusual_seeds') or [])}"]
    return lines


def summary_markdown(study: StudyRef, seed_rows: list[dict]) -> str:
    """The study's markdown summary: :func:`analysis_markdown` and the per-seed status."""
    config = Study.open(study).config
    a = load_analysis(study)
    lines = analysis_markdown(a, f"# vt study `{md(config.name)}`")
    lines += ["", "## Seeds", "", "| seed | status | checkpoints | last step | converged at |", "|---|---|---|---|---|"]
    for r in seed_rows:
        lines.append(f"| {r['seed']} | {r['status']} | {num(r['committed_steps'])} | {num(r['last_step'])} | "
                     f"{converged_at(a, r['seed'])} |")
    return "\n".join(lines)
