"""Markdown of ``analysis.json``, in one place: the study's summary (the flow's artifact) and
`vt report` (the study beside the paper's results, Hu et al. 2024; REFERENCE.md)."""

from __future__ import annotations

from vt_core.location import Location, location
from vt_core.palette import state_graph_data_uri
from vt_core.stages.explain import load_analysis
from vt_core.study import load_study

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


def paper_setting(name: str) -> str | None:
    """The paper setting a study reproduces, from its name (the examples' names start with it)."""
    for key in sorted(PAPER, key=len, reverse=True):
        if name.startswith(key):
            return key
    return None


def states_table(a: dict) -> list[str]:
    """The markdown table of states that the summary and the report share."""
    lines = ["| state | occupancy | mean first step | steps | seeds visiting | detour |", "|---|---|---|---|---|---|"]
    for s in a["states"]:
        lines.append(f"| {s['state']} | {s['occupancy']:.2f} | {s['first_step_mean']} | "
                     f"{s['step_min']}–{s['step_max']} | {len(s['seeds'])} | {'yes' if s.get('detour') else ''} |")
    return lines


def report_markdown(study: str | Location) -> str:
    study = location(study)
    config = load_study(study)
    a = load_analysis(study)
    key = paper_setting(config.name)
    ref = PAPER.get(key) if key else None
    reg = a.get("regression") or {}
    r2 = reg.get("r2")
    conv = [c for c in a["convergence_step"].values() if c is not None]
    rows = [
        ("setting", ref["setting"] if ref else "(no paper setting matches this study's name)", config.name),
        ("seeds", "40", str(len(config.seeds))),
        ("metric convention", "paper_code (the paper's published code)", config.metrics.convention),
        ("k chosen (lowest BIC)", str(ref["k"]) if ref else "-", f"{a['chosen_k']} of 1..{config.hmm.max_states}"
         + (" (BIC still falling at the largest k)" if (a.get("selection") or {}).get("at_max_states") else "")),
        ("detour states", ref["detours"] if ref else "-", ", ".join(map(str, a.get("detour_states") or [])) or "none"),
        ("R^2 of convergence time on time in states", "not given in REFERENCE.md",
         "n/a" if r2 is None else f"{r2:.3f}" + ("" if reg.get("determined") else " (not determined: too few seeds)")),
        ("convergence threshold (held-out acc.)", str(ref["threshold"]) if ref else "-",
         f"{a['convergence_threshold']}; {len(conv)}/{len(a['convergence_step'])} seeds reach it"),
    ]
    lines = [f"# vt report: `{config.name}`", "", "| | paper | this study |", "|---|---|---|"]
    lines += [f"| {name} | {p} | {o} |" for name, p, o in rows]
    lines += ["", "## States", "", *states_table(a)]
    if conv:
        lines += ["", "## Where the transitions fall", "",
                  f"Median convergence step: {sorted(conv)[len(conv) // 2]}."]
        for t in a["transitions"]:
            frm = next(s for s in a["states"] if s["state"] == t["to"])
            lines.append(f"- {t['from']} → {t['to']}: state {t['to']} is first entered at step "
                         f"{frm['first_step_mean']:.0f} on average; top feature {t['top_features'][0]['feature']}")
    return "\n".join(lines) + "\n"


def _fmt(x, nd: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{nd}g}"


def summary_markdown(study: str | Location, seed_rows: list[dict]) -> str:
    """The study's markdown summary: chosen k, a small PNG of the state graph (data URI), states,
    key transitions, per-seed status."""
    config = load_study(study)
    a = load_analysis(study)
    lines = [f"# vt study `{config.name}`", "",
             f"**Chosen number of states (lowest BIC): {a['chosen_k']}** over {len(a['features'])} features "
             f"(BIC weight {_fmt((a.get('selection') or {}).get('bic_weight'))}, gap to the next k "
             f"{_fmt((a.get('selection') or {}).get('bic_gap_to_next'))}).", "",
             *([f"> BIC is lowest at the largest k tried ({config.hmm.max_states}): raise `hmm.max_states` "
                "to see whether it keeps falling.", ""] if a["chosen_k"] == config.hmm.max_states else []),
             "## State graph", "",
             f"![State graph: left to right by first visit, size by occupancy, edge width by seeds]"
             f"({state_graph_data_uri(a)})", "",
             "## States", "", *states_table(a)]
    lines += ["", "## Transitions (top features by mean |d log p / d z|)", ""]
    for t in a["transitions"]:
        feats = ", ".join(f"{f['feature']} ({f['z_mean_change']:+.2f} sd)" for f in t["top_features"][:3])
        lines.append(f"- {t['from']} → {t['to']} (p={t['prob']:.3f}, {t['n_seeds']} seeds): {feats}")
    r = a.get("regression") or {}
    lines += ["", "## Convergence", "",
              f"- convergence (held-out accuracy >= {a['convergence_threshold']}) regressed on time in each state: "
              f"R^2 = {r.get('r2') if r.get('r2') is None else round(r['r2'], 3)} over {r.get('n')} seeds"
              + ("" if r.get("determined") else " (no more seeds than coefficients: R^2 is not meaningful)"),
              f"- detour states: {a.get('detour_states') or 'none'}",
              f"- trajectory dissimilarity (mean pairwise Wasserstein): {a.get('trajectory_dissimilarity')}",
              f"- unusual seeds: {a.get('unusual_seeds') or 'none'}"]
    lines += ["", "## Seeds", "", "| seed | status | checkpoints | last step | converged at |", "|---|---|---|---|---|"]
    for r in seed_rows:
        lines.append(f"| {r['seed']} | {r['status']} | {r['committed_steps']} | {r['last_step']} | "
                     f"{a['convergence_step'].get(str(r['seed']))} |")
    return "\n".join(lines)
