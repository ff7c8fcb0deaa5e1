"""The `vt` command's text for people: help reflowed to the terminal, -h and --version, `vt report` to
stdout (status to stderr, `--out -`), and no None, Python lists or unrounded floats."""

from __future__ import annotations

import re
import shutil

import pytest
from typer.testing import CliRunner

from flows.cli import app
from vt_core.storage.layout import layout

pytestmark = pytest.mark.flow  # runs a Prefect flow or the `vt` command

runner = CliRunner()
COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)  # type: ignore[union-attr]


def wrapped_early(text: str, width: int) -> list[str]:
    """Lines of help broken where the next line's first word would still have fitted: the help's
    source line breaks leaking through, not wrapping at the terminal's width."""
    bad = []
    lines = text.splitlines()
    for cur, nxt in zip(lines, lines[1:]):
        panel = cur.startswith("│") and nxt.startswith("│")
        a, b = (cur[1:-1], nxt[1:-1]) if panel else (cur, nxt)
        if not a.strip() or not b.strip():
            continue
        indent = len(b) - len(b.lstrip())
        cells = [len(a) - len(a.lstrip()), *(m.start() for m in re.finditer(r"(?<=  )\S", a))]  # 2+ spaces apart
        last_cell = max(cells)
        word = b.split()[0]
        if indent != last_cell or word.startswith("["):  # a new row; typer's [default: ...] lines
            continue
        room = (len(a) - 1) if panel else width - 1
        if len(a.rstrip()) + 1 + len(word) <= room:
            bad.append(f"{cur.rstrip()!r} / {nxt.strip()!r}")
    return bad


def test_the_checker_finds_a_line_broken_early():
    assert wrapped_early(" one two\n three four five six seven\n", 40) == ["' one two' / 'three four five six seven'"]
    assert wrapped_early(" one two three\n four\n", 14) == []


@pytest.mark.parametrize("args", [[], *[[c] for c in COMMANDS]], ids=lambda a: " ".join(a) or "vt")
def test_help_is_reflowed_at_80_columns_and_h_is_help(args):
    res = runner.invoke(app, [*args, "-h"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.stdout and "--help" in res.stdout and "-h" in res.stdout
    assert max(len(x) for x in res.stdout.splitlines()) <= 80
    assert wrapped_early(res.stdout, 80) == [], res.stdout


def test_version():
    from importlib.metadata import version

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"vt {version('vt')}"


def test_report_goes_to_stdout_and_says_where_it_wrote_on_stderr(analysed_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    layout(study).report.unlink(missing_ok=True)
    res = runner.invoke(app, ["report", str(study), "--out", "-"])  # stdout alone: no file, nothing else said
    assert res.exit_code == 0 and res.stdout.startswith("# vt report: `tiny`") and res.stderr == ""
    assert not layout(study).report.exists() and not (tmp_path / "-").exists()
    res = runner.invoke(app, ["report", str(study)])  # `vt report STUDY > f.md` holds the markdown alone
    assert res.exit_code == 0 and res.stdout == layout(study).report.read_text()
    assert "written to" not in res.stdout and res.stderr.strip() == f"written to {layout(study).report}"
    for leak in ("None", "[", "&#x27;"):
        assert leak not in res.stdout.split("## States")[0], leak  # the table of the study beside the paper


def test_status_of_a_missing_seed_says_no_none(analysed_study, tmp_path):
    study = tmp_path / "study"
    shutil.copytree(analysed_study, study)
    shutil.rmtree(layout(study).run(1))
    layout(study).resume(1).unlink(missing_ok=True)
    res = runner.invoke(app, ["status", str(study)], env={"COLUMNS": "120"})
    assert res.exit_code == 0 and "missing" in res.stdout
    assert "None" not in res.stdout and "–" in res.stdout


def test_an_unknown_seed_is_named_without_a_python_list(analysed_study):
    res = runner.invoke(app, ["rerun", str(analysed_study), "--seed", "7", "--seed", "9"])
    assert res.exit_code == 2 and "seeds 7, 9 are not in this study (seeds: 0, 1, 2)" in res.output
