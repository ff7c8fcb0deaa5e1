"""The closing lines of `vt run` / `vt analyze` (issue 34, item 3): one "next:", reasons said once
for many seeds, numbers that read as numbers."""

from __future__ import annotations

from vt_core.analysis.records import load_analysis
from vt_core.report.closing import closing_summary
from vt_core.report.narrative import _weight, k_evidence, seed_ranges
from vt_core.stages.metrics import describe_cells


def test_one_next_with_every_step_under_it(analysed_study):
    assert load_analysis(analysed_study)["selection"]["status"] == "undetermined"  # two steps to give
    lines = closing_summary(analysed_study)
    nexts = [i for i, line in enumerate(lines) if line.lstrip().startswith("next:")]
    assert len(nexts) == 1, lines
    step_lines = lines[nexts[0]:]
    assert any("k is undetermined" in line for line in step_lines)
    assert any("vt dashboard" in line for line in step_lines)


def test_a_reason_shared_by_many_seeds_is_said_once():
    cells = {"computed": 400, "reused": 0, "why": {str(s): "new checkpoints or metrics" for s in range(40)}
             | {"41": "seed retrained (its run store is new)"}, "damaged": {}}
    text = describe_cells(cells)
    assert text.count("new checkpoints or metrics") == 1
    assert text == ("metrics: 400 cells computed (seeds 0–39: new checkpoints or metrics; seed 41: seed retrained "
                    "(its run store is new)), 0 reused")
    assert seed_ranges([5, 0, 1, 2, 3, 7, 8]) == "0–3, 5, 7, 8"
    assert seed_ranges(["sp-seed0", "sp-seed1"]) == "sp-seed0, sp-seed1"


def test_a_saturated_bic_weight_is_a_bound():
    assert _weight(1.0) == "> 0.99" and _weight(0.0) == "< 0.01" and _weight(0.5) == "0.5"
    sel = {"k_tried": [1, 2], "runner_up_k": 1, "bic_gap_to_next": 900.0, "bic_weight": 1.0}
    assert "BIC weight of the chosen k > 0.99" in k_evidence({"selection": sel})  # type: ignore[typeddict-item]
