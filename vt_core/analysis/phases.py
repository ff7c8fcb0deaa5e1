"""Phases: when every seed visits the states in one order, the states mark progress along one path
rather than distinct regimes, and what a researcher wants is where each seed crosses from one to the
next (issue 33, item 3).

:func:`phase_timeline` tests the order (each seed's run-length path climbs the states' canonical
labels, which are ordered by mean first visit, and never returns to one it left) and, when it holds,
gives each boundary's step per seed with the median and the 2.5-97.5 % range over the seeds that
cross it. States that many seeds skip (more than a fifth of those that go past them) are branches or
detours, not phases: then there is no timeline. A seed may skip a state now and then (its boundary
is then where it enters the next one it visits) or stop before the last (it is not counted for the
boundaries it never reaches).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np

#: a state is on the one path when at least this share of the seeds that go past it visit it
MIN_VISITED = 0.8


class Boundary(TypedDict):
    into: int                               # the state entered
    steps: dict[str, int]                   # seed -> the first step decoded in ``into`` (or a later state)
    median: float
    low: float                              # 2.5th percentile over the seeds that cross it
    high: float                             # 97.5th percentile
    n_seeds: int


class Phases(TypedDict):
    ordered: bool
    order: list[int]
    boundaries: list[Boundary]
    why_not: str | None                     # the first seed that leaves the order, and how


def _runs(path: np.ndarray) -> list[int]:
    """The states of a path with repeats collapsed: [0, 0, 1, 1, 2] -> [0, 1, 2]."""
    path = np.asarray(path)
    keep = np.concatenate([[True], path[1:] != path[:-1]]) if len(path) else np.zeros(0, bool)
    return [int(s) for s in path[keep]]


def phase_timeline(paths: dict[int, np.ndarray], steps: dict[int, np.ndarray], k: int) -> Phases:
    """The phase boundaries when every seed's path climbs the states in one order (module docstring);
    ``ordered`` False with the reason otherwise."""
    for seed in sorted(paths):
        runs = _runs(paths[seed])
        back = next((i for i in range(1, len(runs)) if runs[i] < runs[i - 1]), None)
        if back is not None:
            return {"ordered": False, "order": [], "boundaries": [],
                    "why_not": f"seed {seed} goes back from state {runs[back - 1]} to state {runs[back]}"}
    visits = {seed: set(_runs(paths[seed])) for seed in paths}
    for state in range(k):
        past = [seed for seed in paths if max(visits[seed]) > state]
        skipped = [seed for seed in past if state not in visits[seed]]
        if past and len(skipped) > (1 - MIN_VISITED) * len(past):
            return {"ordered": False, "order": [], "boundaries": [],
                    "why_not": f"state {state} is skipped by {len(skipped)} of the {len(past)} seeds that go past it: "
                               f"the states branch (or hold a detour) rather than form one path"}
    boundaries: list[Boundary] = []
    for state in range(1, k):
        crossed = {}
        for seed in sorted(paths):
            path, st = np.asarray(paths[seed]), np.asarray(steps[seed])
            at = np.flatnonzero(path >= state)
            if at.size:
                crossed[str(seed)] = int(st[at[0]])
        if not crossed:
            continue
        v = np.array(list(crossed.values()), dtype=float)
        boundaries.append({"into": state, "steps": crossed, "median": float(np.median(v)),
                           "low": float(np.percentile(v, 2.5)), "high": float(np.percentile(v, 97.5)),
                           "n_seeds": len(crossed)})
    return {"ordered": True, "order": list(range(k)), "boundaries": boundaries, "why_not": None}


def phases_sentence(ph: Phases) -> str | None:
    """One line for the closing lines and the report; None when the states are not ordered."""
    if not ph["ordered"] or not ph["boundaries"]:
        return None
    parts = [f"{b['into'] - 1}→{b['into']} at {b['median']:,.0f} [{b['low']:,.0f}, {b['high']:,.0f}]"
             for b in ph["boundaries"]]
    return ("every seed visits the states in one order (" + " → ".join(map(str, ph["order"])) +
            "): they mark progress along one path rather than distinct regimes; phase boundaries, median step "
            "[95% range over seeds]: " + ", ".join(parts))
