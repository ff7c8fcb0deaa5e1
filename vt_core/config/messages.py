"""pydantic's validation errors as one short message naming each bad field (:func:`format_errors`)."""

from __future__ import annotations

import reprlib

from pydantic import ValidationError

_MAX_ERRORS = 8
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 4, 4, 2


def format_errors(err: ValidationError, source: str) -> str:
    """One line per bad field (at most 8, then how many more), each naming its dotted path, what
    is wrong and a short form of the value given: a 10 MB config gives a short message."""
    errors = err.errors(include_url=False, include_context=False)
    lines = [f"invalid study config {source}:"]
    for e in errors[:_MAX_ERRORS]:
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling"
        elif e["type"] == "missing":
            msg = "required; add it to the config"
        lines.append(f"  {loc or '(top level)'}: {msg} (got {_SHORT.repr(e.get('input'))})"[:300])
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more")
    return "\n".join(lines)
