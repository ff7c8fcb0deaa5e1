"""`vt figures`: every figure written in every format, and each renders with real ink."""

import io
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from vt_core.report.figures import FIGURES, FigureFormatError, write_figures
from vt_core.report.figures.graph import state_graph_png
from vt_core.report.figures.style import TWO_COLUMN


def _ink(img: Image.Image) -> float:
    """Share of pixels that are not background white."""
    a = np.asarray(img.convert("L"))
    return float((a < 230).mean())


def test_png_figures_have_ink_and_paper_sizes(analysed_study, tmp_path):
    paths = write_figures(analysed_study, "png", tmp_path / "png")
    assert [p.name for p in paths] == [f"{n}.png" for n in FIGURES]
    for p in paths:
        img = Image.open(p)
        assert img.format == "PNG"
        width_in = img.size[0] / 300  # 300 dpi
        assert 1.5 < width_in <= TWO_COLUMN + 0.3, (p.name, img.size)
        assert _ink(img) > 0.01, p.name  # drawn, not blank


def test_pdf_figures_render_with_pdftoppm(analysed_study, tmp_path):
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm is not installed (apt-get install poppler-utils)")
    for p in write_figures(analysed_study, "pdf", tmp_path):
        assert p.read_bytes().startswith(b"%PDF")
        png = subprocess.run(["pdftoppm", "-png", "-r", "100", "-singlefile", str(p)], check=True,
                             capture_output=True).stdout
        assert _ink(Image.open(io.BytesIO(png))) > 0.01, p.name


def test_svg_figures_are_vector_drawings(analysed_study, tmp_path):
    for p in write_figures(analysed_study, "svg", tmp_path):
        root = ET.parse(p).getroot()
        drawn = [el for el in root.iter() if el.tag.endswith(("path", "use", "text"))]
        assert root.tag.endswith("svg") and len(drawn) > 10, p.name


def test_state_graph_png_is_not_clipped(analysed_study):
    import json

    a = json.loads((analysed_study / "analysis.json").read_text())
    img = Image.open(io.BytesIO(state_graph_png(a))).convert("L")
    px = np.asarray(img)
    assert 400 < img.size[0] <= 520 and _ink(img) > 0.05
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    assert (border > 240).all(), "a node or an edge touches the picture's edge"


def test_bad_format_is_a_one_line_error(analysed_study):
    from typer.testing import CliRunner

    from flows.cli import app

    with pytest.raises(FigureFormatError, match="not one of pdf, svg, png"):
        write_figures(analysed_study, "jpg")
    res = CliRunner().invoke(app, ["figures", str(analysed_study), "--format", "gif"])
    assert res.exit_code == 2 and res.output.startswith("error: figure format 'gif'")
    res = CliRunner().invoke(app, ["figures", str(analysed_study), "--format", "svg", "--out",
                                   str(analysed_study / "paper")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (analysed_study / "paper").iterdir()) == sorted(f"{n}.svg" for n in FIGURES)


def test_with_no_optional_state_the_regression_figure_shows_where_the_time_went(analysed_study):
    """Issue 34, item 9: with no detour to test, the figure was a few dots against seed rank under a
    sentence for a title; now each converged seed's steps before convergence, state by state, with
    the conclusion as a caption."""
    from vt_core.analysis.records import load_analysis
    from vt_core.report.figures import plots
    from vt_core.report.outputs import load_outputs

    a = load_analysis(analysed_study)
    assert not (a.get("regression") or {}).get("states")  # the tiny study has no optional state
    fig = plots.regression(load_outputs(analysed_study))
    ax = fig.axes[0]
    assert ax.get_title(loc="left") == "Where the steps before convergence go"
    converged = [s for s, c in a["convergence_step"].items() if c is not None]
    assert len(ax.get_yticks()) == len(converged) and ax.patches  # one stacked bar per converged seed
    bars = {}
    for p in ax.patches:
        y = round(p.get_y() + p.get_height() / 2)
        bars[y] = max(bars.get(y, 0), p.get_x() + p.get_width())
    assert sorted(bars.values()) == sorted(float(a["convergence_step"][s]) for s in converged)  # ends at convergence
    assert a["regression"]["conclusion"][:40] in fig._supxlabel.get_text().replace("\n", " ")
