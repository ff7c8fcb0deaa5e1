"""`vt compare STUDY_A STUDY_B [...]`: one HMM fitted jointly over every study's seeds, then per
study what differs (:mod:`vt_core.analysis.compare`). The steps, one Prefect task each in the compare flow::

    prepare_comparison   -> OUT/comparison.json, OUT/hmm/input.npz, split.json; the first fits
    fit_comparison (job) -> OUT/hmm/fits/NAME.json (+ .npz)
    select_comparison    -> the grid's extension, then the bootstrap fits
    finalize_comparison  -> OUT/hmm/selection.json, model.npz, paths.json, OUT/analysis.json
    publish_comparison   -> OUT/dashboard/index.html, OUT/report.md; the artifacts' content

The studies must have been analysed (their metrics.zarr holds the features), model the same
features from the same metrics under the same convention; anything else is refused naming the
difference. The joint fit takes the first study's HMM settings (the others' differences are noted).
"""

from __future__ import annotations

from typing import TypedDict

from vt_core.analysis import hmm, states
from vt_core.analysis.compare import CompareError, feature_difference, finish, joint_sequences
from vt_core.analysis.records import Analysis
from vt_core.config.study_config import HMMConfig, StudyConfig
from vt_core.metrics.store import load_features
from vt_core.stages.explain import convergence_steps
from vt_core.storage.layout import comparison_dir, layout
from vt_core.storage.location import Location, location, read_json, url, write_json_atomic
from vt_core.storage.study import load_study


class ComparisonPlan(TypedDict):
    root: str
    jobs: list[dict]
    notes: list[str]


def _names(configs: list[StudyConfig]) -> list[str]:
    """The studies' names, made unique (``name``, ``name-2``, ...)."""
    out: list[str] = []
    for c in configs:
        name, i = c.name, 2
        while name in out:
            name, i = f"{c.name}-{i}", i + 1
        out.append(name)
    return out


def check_comparable(configs: dict[str, StudyConfig]) -> list[str]:
    """Refuse studies whose metric sets, convention or HMM features differ (naming the difference);
    return notes on the HMM settings that differ from the first study's (the joint fit uses those)."""
    names = list(configs)
    a, ca = names[0], configs[names[0]]
    notes = []
    for b in names[1:]:
        cb = configs[b]
        ma, mb = set(ca.metrics.names), set(cb.metrics.names)
        if ma != mb:
            raise CompareError(f"studies {a} and {b} compute different metrics: only {a} has {sorted(ma - mb)}, "
                               f"only {b} has {sorted(mb - ma)}; compare studies with the same metrics.names")
        if ca.metrics.convention != cb.metrics.convention:
            raise CompareError(f"studies {a} and {b} compute their metrics under different conventions "
                               f"({ca.metrics.convention!r} against {cb.metrics.convention!r}): the same name is "
                               f"another number; compare studies with the same metrics.convention")
        if ca.hmm_features != cb.hmm_features:
            raise CompareError(feature_difference(a, ca.hmm_features, b, cb.hmm_features))
        ha, hb = ca.hmm.model_dump(), cb.hmm.model_dump()
        differ = sorted(k for k in ha if k != "features" and ha[k] != hb[k])
        if differ:
            notes.append(f"{b}'s hmm settings {differ} differ from {a}'s; the joint fit uses {a}'s")
    return notes


def _group(study: Location, config: StudyConfig) -> tuple[hmm.Sequences, dict[int, int | None]]:
    if not layout(study).metrics.exists():
        raise CompareError(f"{study} has no metrics yet; run `vt analyze {study}` first")
    seqs = hmm.sequences_from_features(load_features(study, config.hmm_features))
    return seqs, convergence_steps(study, seqs.seeds, config.hmm.convergence_threshold)


def check_studies(studies: list[str]) -> tuple[list[str], list[StudyConfig], list[str]]:
    """The studies' names and configs, refused when they cannot be compared (nothing is written);
    the notes of :func:`check_comparable`. `vt compare` calls this before the flow starts."""
    if len(studies) < 2:
        raise CompareError(f"give at least two studies to compare; got {len(studies)}")
    configs = [load_study(location(s)) for s in studies]
    names = _names(configs)
    return names, configs, check_comparable(dict(zip(names, configs)))


def prepare_comparison(studies: list[str], out: str | None = None) -> ComparisonPlan:
    """Check the studies, pool their seeds, write ``comparison.json`` and the joint HMM input."""
    names, configs, notes = check_studies(studies)
    where = [location(s) for s in studies]
    root = location(out) if out is not None else comparison_dir(where[0], names)
    if any(root == s for s in where):
        raise CompareError(f"the comparison's directory {root} is one of the studies; give another with --out")
    loaded = {n: _group(s, c) for n, s, c in zip(names, where, configs)}
    joint, members = joint_sequences({n: g for n, (g, _) in loaded.items()})
    conv = {i: loaded[m["study"]][1].get(m["seed"]) for i, m in enumerate(members)}
    cfg = configs[0].hmm.model_copy(update={"features": configs[0].hmm_features})
    root.mkdir(parents=True, exist_ok=True)
    plan = states.prepare(root, joint, cfg)
    thresholds = {n: c.hmm.convergence_threshold for n, c in zip(names, configs)}
    if len(set(thresholds.values())) > 1:
        notes.append(f"convergence thresholds differ: {thresholds}; each study's own is used")
    write_json_atomic(layout(root).comparison, {
        "studies": [{"name": n, "study": url(s), "seeds": loaded[n][0].seeds, "convergence_threshold": thresholds[n],
                     "model": c.model.name, "data": c.data.name} for n, s, c in zip(names, where, configs)],
        "features": joint.features, "hmm": cfg.model_dump(mode="json"), "notes": notes + plan["degraded"],
        "members": members, "convergence": {str(i): c for i, c in conv.items()}})
    return {"root": url(root), "jobs": plan["jobs"], "notes": notes}


def comparison_setup(root: str | Location) -> dict:
    return read_json(layout(root).comparison, "`vt compare` with the same studies writes it again")


def _cfg(root: str | Location) -> HMMConfig:
    return HMMConfig.model_validate(comparison_setup(root)["hmm"])


def fit_comparison(root: str | Location, job: dict) -> dict:
    return states.fit(root, job, _cfg(root))


def select_comparison(root: str | Location, rows: list[dict]) -> dict:
    return states.select(root, rows, _cfg(root))


def finalize_comparison(root: str | Location, rows: list[dict]) -> dict:
    """Choose k, decode every seed, explain, and compare the studies on that one decoding."""
    setup, cfg = comparison_setup(root), _cfg(root)
    sel = states.finalize(root, rows, cfg)
    conv = {int(i): c for i, c in setup["convergence"].items()}
    name = " vs ".join(s["name"] for s in setup["studies"])
    result = finish(root, cfg, setup["members"], conv, name,
                    extra={"comparison_notes": setup["notes"], "compared": setup["studies"]})
    return {"chosen_k": sel["chosen_k"], "status": sel["status"], "table": sel["table"],
            "convergence_difference": result["comparison"]["convergence_difference"]}


def load_comparison(root: str | Location) -> Analysis:
    """The comparison's ``analysis.json`` (its ``comparison`` section: :func:`vt_core.analysis.compare.summarise`)."""
    path = layout(location(root)).analysis
    if not path.is_file():
        raise CompareError(f"{path} not found: the comparison has not finished; run `vt compare` again")
    return read_json(path, "`vt compare` with the same studies writes it again")  # type: ignore[return-value]


def compare_studies(studies: list[str], out: str | None = None, run=map) -> dict:
    """The whole comparison without an orchestrator (what the compare flow runs as tasks)."""
    plan = prepare_comparison(studies, out)
    root = plan["root"]
    rows = states.run_fits(root, plan["jobs"], _cfg(root), run)
    return finalize_comparison(root, rows) | {"root": root}


class ComparisonArtifacts(TypedDict):
    name: str
    dashboard: str
    report: str
    link: str
    markdown: str
    table: list[dict]


def publish_comparison(root: str | Location) -> ComparisonArtifacts:
    """Write the comparison's dashboard and ``report.md``; what the flow publishes as artifacts (a
    link to the dashboard, the report, the per-study table)."""
    from vt_core.report.compare_markdown import comparison_markdown
    from vt_core.report.dashboard.compare import build_comparison_dashboard
    from vt_core.storage.location import is_remote, write_text_atomic

    root = location(root)
    a = load_comparison(root)
    page = build_comparison_dashboard(root)
    text = comparison_markdown(a)
    write_text_atomic(layout(root).report, text)
    c = a["comparison"]
    table = [{"study": n, "seeds": p["n_seeds"], "converged": p["convergence"]["n_converged"],
              "mean_convergence_step": p["convergence"].get("mean"), "specific_states": str(p["specific_states"]),
              "detours": str(p["detours"])} for n, p in c["per_study"].items()]
    return {"name": "-vs-".join(c["studies"]), "dashboard": url(page), "report": url(layout(root).report),
            "link": str(page) if is_remote(page) else page.as_uri(), "markdown": text, "table": table}
