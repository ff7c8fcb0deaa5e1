"""A study opened once (issue 29): the handle carries location, layout and config; every function
that takes a study takes it, and nothing below reads study.json again."""

from __future__ import annotations

import pytest

from vt_core.storage import study as study_module
from vt_core.storage.handle import Study
from vt_core.storage.layout import layout
from vt_core.storage.location import location
from vt_core.storage.study import StudyError, load_study


def test_a_handle_goes_wherever_a_path_goes(analysed_study):
    s = Study.open(analysed_study)
    assert Study.open(s) is s
    assert location(s) is s.location and layout(s) is s.layout and load_study(s) is s.config
    assert str(s) == str(analysed_study) and f"{s}" == str(analysed_study)
    assert s.run(0).committed > 0


def test_opening_a_directory_that_is_no_study_is_refused(tmp_path):
    with pytest.raises(StudyError, match="not a study directory"):
        Study.open(tmp_path)


def test_the_analysis_reads_study_json_once_per_stage(analysed_study, monkeypatch):
    """`stages.analyse` opens the study once and passes it down: study.json is read once (it was
    read at every level before: the metric, HMM and explain stages and what they call)."""
    from vt_core import stages

    reads = []
    read_json = study_module.read_json

    def counting(path, *a, **kw):
        if path.name == "study.json":
            reads.append(path)
        return read_json(path, *a, **kw)

    monkeypatch.setattr(study_module, "read_json", counting)
    stages.analyse(analysed_study)
    assert len(reads) == 1, reads
