"""`vt report`: a study's results beside the paper's (Hu et al. 2024; REFERENCE.md)."""

from __future__ import annotations

import json

from vt_core.location import Location, location
from vt_core.stages import ANALYSIS_JSON
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


def report_markdown(study: str | Location) -> str:
    study = location(study)
    config = load_study(study)
    a = json.loads((study / ANALYSIS_JSON).read_text())
    key = paper_setting(config.name)
    ref = PAPER.get(key) if key else None
    reg = a.get("regression") or {}
    r2 = reg.get("r2")
    conv = [c for c in a["convergence_step"].values() if c is not None]
    rows = [
        ("setting", ref["setting"] if ref else "(no paper setting matches this study's name)", config.name),
        ("seeds", "40", str(len(config.seeds))),
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
    lines += ["", "## States", "", "| state | occupancy | mean first step | seeds visiting | detour |", "|---|---|---|---|---|"]
    for s in a["states"]:
        lines.append(f"| {s['state']} | {s['occupancy']:.2f} | {s['first_step_mean']} | {len(s['seeds'])} | "
                     f"{'yes' if s.get('detour') else ''} |")
    if conv:
        lines += ["", "## Where the transitions fall", "",
                  f"Median convergence step: {sorted(conv)[len(conv) // 2]}."]
        for t in a["transitions"]:
            frm = next(s for s in a["states"] if s["state"] == t["to"])
            lines.append(f"- {t['from']} → {t['to']}: state {t['to']} is first entered at step "
                         f"{frm['first_step_mean']:.0f} on average; top feature {t['top_features'][0]['feature']}")
    return "\n".join(lines) + "\n"
