"""pydantic's validation errors as one short message naming each bad field (:func:`format_errors`)."""

from __future__ import annotations

import reprlib

from pydantic import ValidationError

_MAX_ERRORS = 8
_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlevel = 60, 60, 4, 4, 2


def _look_alikes(key: str) -> str:
    """``: its 2nd character 'а' is CYRILLIC SMALL LETTER A (U+0430), not ASCII`` for a key that
    holds a character outside ASCII (every key vt knows is ASCII): a look-alike pasted from
    elsewhere reads as the right word and is otherwise impossible to see."""
    import unicodedata

    odd = [(i, ch) for i, ch in enumerate(key) if ord(ch) > 127]
    if not odd:
        return ""
    i, ch = odd[0]
    nth = {1: "st", 2: "nd", 3: "rd"}.get((i + 1) % 10 if (i + 1) % 100 not in (11, 12, 13) else 0, "th")
    name = unicodedata.name(ch, "an unnamed character")
    more = f" (and {len(odd) - 1} more such)" if len(odd) > 1 else ""
    return (f"; its {i + 1}{nth} character {ch!r} is {name} (U+{ord(ch):04X}), not ASCII{more}: every key vt "
            f"knows is plain ASCII; retype it")


def format_errors(err: ValidationError, source: str) -> str:
    """One line per bad field (at most 8, then how many more), each naming its dotted path, what
    is wrong and a short form of the value given: a 10 MB config gives a short message."""
    errors = err.errors(include_url=False, include_context=False)
    lines = [f"invalid study config {source}:"]
    for e in errors[:_MAX_ERRORS]:
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling" + _look_alikes(str(e["loc"][-1]) if e["loc"] else "")
        elif e["type"] == "missing":
            msg = "required; add it to the config"
        lines.append(f"  {loc or '(top level)'}: {msg} (got {_SHORT.repr(e.get('input'))})"[:300])
    if len(errors) > _MAX_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_ERRORS} more")
    return "\n".join(lines)
