"""vt_core.report.narrative: the terminal, the dashboard header, the summary and the report say the same
thing about k: its value, status, evidence, uncertainty and notes."""

from __future__ import annotations

import html
import re

from vt_core.analysis.records import load_analysis
from vt_core.report.markdown import report_markdown, summary_markdown
from vt_core.report.narrative import closing_lines, header_html, k_evidence, k_headline, k_notes, k_uncertainty, md, num


def test_every_place_agrees_on_k(analysed_study):
    a = load_analysis(analysed_study)
    head, evidence, unc = k_headline(a), k_evidence(a), k_uncertainty(a)
    assert unc is not None and "bootstrap over seeds" in unc
    terminal = "\n".join(closing_lines(a))
    page = header_html(a, "context")
    summary = summary_markdown(analysed_study, [])
    report = report_markdown(analysed_study)
    assert head in terminal and evidence in terminal and unc in terminal
    for text in (summary, report):  # markdown: the same words, escaped as every name there is
        assert md(head) in text and md(evidence) in text and md(unc) in text
    assert html.escape(head) in page and html.escape(evidence) in page and html.escape(unc) in page
    for note in k_notes(a):
        assert note in terminal and html.escape(note) in page and md(note) in summary and md(note) in report


def test_an_undetermined_k_is_said_as_such():
    a = {"chosen_k": 8, "selection": {"status": "undetermined", "reasons": ["BIC is still falling at k = 8"],
                                      "k_tried": [1, 8], "k_infeasible": [9, 10], "why_not": {"9": "too many"}}}
    lines = closing_lines(a)
    assert lines[0].startswith("states: k = 8 (undetermined)")
    assert any("BIC is still falling" in x for x in lines) and any("k = 9–10 not fitted" in x for x in lines)
    assert "undetermined" in header_html(a, "x") and "color:#b00020" in header_html(a, "x")


def test_numbers_and_names_for_people():
    assert num(5077.333333333333) == "5,077" and num(0.123456) == "0.123" and num(None) == "–"
    assert num(12) == "12" and num(float("nan")) == "–"
    assert md("<svg onload=x>|a") == "&lt;svg onload=x&gt;\\|a"


def test_no_python_in_the_text():
    from vt_core.report.markdown import converged_at
    from vt_core.report.narrative import listed

    assert listed([7]) == "7" and listed([1, 2, 1000]) == "1, 2, 1000" and listed([]) == "none"
    assert listed([0.5, 5077.333333333333]) == "0.5, 5,077"
    a = {"convergence_step": {"0": 120, "1": None}}
    assert (converged_at(a, 0), converged_at(a, 1), converged_at(a, 2)) == ("step 120", "never", "–")
    a["accuracy_unrecorded"] = [1]  # no accuracy at all is not "never converged"
    assert converged_at(a, 1) == "no accuracy recorded"
    from vt_core.report.dashboard.timeline import _converged

    assert _converged({"1": None}, "1", frozenset({"1"})) == "no held-out accuracy recorded"
    assert _converged({"1": None}, "1") == "never"
    boot = {"n": 4, "chosen_k_support": 1.0, "k_distribution": {"3": 1.0}, "k_interval": None}
    text = k_uncertainty({"selection": {"bootstrap": boot}})
    assert text == "bootstrap over seeds (4 resamples): the chosen k in 100% (k = 3: 100%)"
    sel = {"k_tried": [1, 2, 3], "runner_up_k": 2, "bic_gap_to_next": 5077.333333333333, "bic_weight": 0.99991}
    assert "(BIC 5,077 higher, BIC weight of the chosen k > 0.99)" in k_evidence({"selection": sel})


def test_summary_and_report_hold_no_python(analysed_study):
    summary, report = summary_markdown(analysed_study, []), report_markdown(analysed_study)
    for text in (summary.split("## State graph")[0] + summary.split("## Seeds")[-1], report):
        assert "None" not in text and "&#x27;" not in text and not re.search(r"\d\.\d{5,}", text)
    assert "seeds reach it" in report and "[" not in report.split("## States")[0]


def test_phases_and_each_criterion_are_said_everywhere(analysed_study):
    """Issue 33: the phase timeline (when the states are one ordered progression) and k by each
    criterion, the paper's procedure included, in the terminal, the page and the report."""
    from vt_core.analysis.phases import phases_sentence

    a = load_analysis(analysed_study)
    report = report_markdown(analysed_study)
    crit = a["selection"]["criteria"]
    assert set(crit) == {"bic", "cv", "bootstrap", "paper"} and crit["bic"] == (a["selection"].get("bic_k") or a["chosen_k"])
    assert "| k by each criterion |" in report and "the paper's procedure (mean held-out BIC" in report
    sentence = phases_sentence(a["phases"])
    if a["phases"]["ordered"]:
        assert f"phases: {sentence}" in closing_lines(a) and "## Phases" in report
        assert html.escape(sentence) in header_html(a, "x")
    else:
        assert sentence is None and "## Phases" not in report
    fake = {**a, "phases": {"ordered": True, "order": [0, 1], "why_not": None, "boundaries": [
        {"into": 1, "steps": {"0": 4, "1": 6}, "median": 5.0, "low": 4.1, "high": 5.9, "n_seeds": 2}]}}
    assert any(line.startswith("phases: every seed visits the states in one order (0 → 1)") and "0→1 at 5 [4, 6]"
               in line for line in closing_lines(fake))
