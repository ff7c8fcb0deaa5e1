"""The role table: which tensors the weight metrics read, as what, and why (`vt hooks`,
`vt import --dry-run`, the import's closing lines). The rules: :mod:`vt_core.metrics.roles`."""

from __future__ import annotations

import fnmatch

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vt_core.metrics.roles import RoleRow

_MARK = {"known": "", "guessed": "guessed", "given": "--roles"}


def print_role_table(console: Console, rows: list[RoleRow], title: str, stored: set[str] | None = None,
                     exclude: list[str] | None = None) -> int:
    """Print one row per tensor; return how many matrices the per-matrix metrics average over.
    ``stored``: the tensors the study stores (None: all of ``rows`` but buffers); ``exclude``: the
    config's ``metrics.exclude`` globs."""
    table = Table(title=title)
    for col in ("tensor", "module", "shape", "role", "matrices", "why", "certainty", "stored"):
        table.add_column(col)
    n_mats = n_kernels = 0
    for r in rows:
        kept = (r["name"] in stored) if stored is not None else not r["buffer"]
        out = any(fnmatch.fnmatchcase(r["name"], g) for g in exclude or [])
        role = "exclude (metrics.exclude)" if out else r["role"]
        n = 0 if out or not kept else r["matrices"]
        if role == "kernel":
            n_kernels += n
        else:
            n_mats += n
        table.add_row(escape(r["name"]), r["module"], str(list(r["shape"])), role, str(n) if n else "",
                      escape(r["why"]), _MARK[r["certainty"]], "yes" if kept else "no")
    Console(width=max(console.width, 170)).print(table)
    guessed = [r["name"] for r in rows if r["certainty"] == "guessed"]
    line = f"per-matrix metrics average over {n_mats} matrices"
    if n_kernels:
        line += f" and {n_kernels} conv kernels (l1, l2 and code_sparsity only)"
    console.print(line, highlight=False)
    if guessed:
        console.print(guessed_line(guessed), soft_wrap=True, highlight=False)
    return n_mats


def guessed_line(guessed: list[str]) -> str:
    """One line naming the roles guessed from a plain state_dict, and how to make them known."""
    shown = ", ".join(guessed[:6]) + (f" and {len(guessed) - 6} more" if len(guessed) > 6 else "")
    return (f"roles guessed from names, shapes and values (no model): {len(guessed)} tensors ({shown}); "
            f"--factory pkg.mod:fn makes them known, --roles FILE sets them")
