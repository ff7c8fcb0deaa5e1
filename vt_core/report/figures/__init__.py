"""Publication-ready static figures of a study (``vt figures STUDY``), drawn with matplotlib in the
dashboard's palette and words, sized for a one- or two-column paper (:mod:`.style`):

- ``state_graph``: the state graph, layered by first visit (:mod:`.graph`);
- ``timeline``: the decoded state of every seed, grouped by path;
- ``curves``: the HMM's features against step, mean and 10-90% band over seeds by the modal state;
- ``model_selection``: BIC, AIC, held-out log L against k, k not fitted, the bootstrap distribution;
- ``convergence_regression``: the regression behind the detour test.
"""

from __future__ import annotations

from collections.abc import Callable

from vt_core.errors import VtError
from vt_core.report.figures import plots
from vt_core.report.figures.graph import state_graph_figure
from vt_core.report.figures.style import FORMATS, ONE_COLUMN, paper_style, to_bytes
from vt_core.report.outputs import Outputs, load_outputs
from vt_core.storage.layout import layout
from vt_core.storage.location import Location, location, write_bytes_atomic


class FigureFormatError(VtError, ValueError):
    """A figure format vt cannot write."""


FIGURES: dict[str, Callable[[Outputs], object]] = {
    "state_graph": lambda out: state_graph_figure(out.analysis, ONE_COLUMN),
    "timeline": plots.timeline,
    "curves": plots.curves,
    "model_selection": plots.selection,
    "convergence_regression": plots.regression,
}


def write_figures(study: str | Location, fmt: str = "pdf", out_dir: str | Location | None = None) -> list[Location]:
    """Draw every figure of :data:`FIGURES` into ``out_dir`` (default ``STUDY/figures``) as
    ``NAME.FMT``; the files written, in that order."""
    if fmt not in FORMATS:
        raise FigureFormatError(f"figure format {fmt!r} is not one of {', '.join(FORMATS)}; pass --format pdf, "
                                f"svg or png")
    study = location(study)
    outputs = load_outputs(study)
    target = location(out_dir) if out_dir is not None else layout(study).figures
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with paper_style():
        for name, draw in FIGURES.items():
            path = target / f"{name}.{fmt}"
            write_bytes_atomic(path, to_bytes(draw(outputs), fmt))  # type: ignore[arg-type]
            written.append(path)
    return written
