"""Sizes and type for paper figures: one column (3.35 in, ACL/IEEE/NeurIPS-style single column) or
two columns (6.9 in), 8 pt type, fonts embedded as TrueType (Type 42) in PDF, 300 dpi PNG."""

from __future__ import annotations

import contextlib
import io

from matplotlib import rc_context
from matplotlib.figure import Figure

ONE_COLUMN = 3.35  # inches
TWO_COLUMN = 6.9
FORMATS = ("pdf", "svg", "png")

RC = {
    "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7,
    "legend.fontsize": 7, "legend.frameon": False, "axes.spines.top": False, "axes.spines.right": False,
    "axes.linewidth": 0.6, "xtick.major.width": 0.6, "ytick.major.width": 0.6, "lines.linewidth": 1.2,
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02, "figure.dpi": 150, "savefig.dpi": 300,
}


@contextlib.contextmanager
def paper_style():
    """matplotlib settings for every figure vt draws (no global state left behind)."""
    with rc_context(RC):
        yield


def new_figure(width: float, height: float, **kwargs) -> Figure:
    """A figure not attached to pyplot (no GUI backend, nothing global)."""
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def to_bytes(fig: Figure, fmt: str, dpi: int | None = None) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi or RC["savefig.dpi"], metadata=_metadata(fmt))
    return buf.getvalue()


def _metadata(fmt: str) -> dict | None:
    """No creation date in PDF/SVG, so that the same study gives the same file."""
    if fmt == "pdf":
        return {"CreationDate": None}
    if fmt == "svg":
        return {"Date": None}
    return None
