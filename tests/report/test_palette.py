"""The states' palette is told apart with colour-blind vision too, and the graph is laid out from
the graph (layers by first visit)."""

import itertools

import numpy as np

from vt_core.report.palette import NO_STATE, STATE_COLORS, graph_layout, state_palette, text_color

# Machado, Oliveira & Fernandes (2009), severity 1: linear-RGB simulation matrices
CVD = {
    "normal": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _lab(hex_color: str, sim: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of a colour as seen under ``sim``."""
    c = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    rgb = np.clip(sim @ lin, 0, 1)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = (lambda t: np.where(t > 0.008856, np.cbrt(t), 7.787 * t + 16 / 116))(xyz / [0.95047, 1.0, 1.08883])
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_distance(colors: list[str]) -> float:
    return min(np.linalg.norm(_lab(a, m) - _lab(b, m)) for m in CVD.values() for a, b in itertools.combinations(colors, 2))


def test_twelve_states_are_told_apart_under_every_colour_vision():
    assert len(set(state_palette(12))) == 12
    assert _min_distance(state_palette(8)) > 15  # CIE76 distance, under normal vision and 3 deficiencies
    assert _min_distance(state_palette(12)) > 10
    # the "no state" grey is far from every state colour, whatever the vision
    assert min(_min_distance([c, NO_STATE]) for c in STATE_COLORS) > 20


def test_palette_is_stable_and_never_the_no_state_colour():
    assert state_palette(4) == state_palette(8)[:4] == list(STATE_COLORS[:4])
    big = state_palette(20)
    assert len(set(big)) == 20 and NO_STATE not in big and big[:12] == list(STATE_COLORS)


def test_label_colour_reads_on_its_fill():
    assert text_color("#0072b2") == "white" and text_color("#e69f00") == "black"
    assert text_color("#ffffff") == "black" and text_color("#000000") == "white"


def _analysis(first: list[float | None], edges: list[tuple[int, int]]) -> dict:
    return {"states": [{"state": i, "first_step_mean": f} for i, f in enumerate(first)],
            "graph": {"edges": [{"source": a, "target": b} for a, b in edges]}}


def test_graph_layers_follow_first_visits_and_branches_share_a_layer():
    # 0 -> 1 -> 3 and 0 -> 2 -> 3: the detour 2 sits in 1's layer, stacked apart in y
    x, y = graph_layout(_analysis([0, 10, 12, 40], [(0, 1), (1, 3), (0, 2), (2, 3)]))
    assert list(x) == [0, 1, 1, 2]
    assert abs(y[1] - y[2]) > 0.5 and y[0] == y[3] == 0
    # an edge back to an earlier state does not change the layers; a never-visited state goes last
    x, _ = graph_layout(_analysis([0, 5, None], [(0, 1), (1, 0)]))
    assert list(x) == [0, 1, 2]


def test_a_state_entered_late_is_placed_late_whatever_its_mean_first_visit():
    """Issue 34, item 8: state 2, which one seed starts in but the other five enter late from the
    last state 3, has the lower mean first visit (so its label) and no earlier-visited predecessor:
    it was drawn at the far left among the initial states, its arrow from 3 running back under the
    graph. By the median step at which the seeds enter it, it goes after state 3."""
    seeds = [0, 1, 2, 3, 4, 5]
    states = [{"state": 0, "seeds": seeds[1:], "first_step_mean": 0.0, "step_min": 0},
              {"state": 1, "seeds": seeds[1:], "first_step_mean": 40.0, "step_min": 30},
              {"state": 2, "seeds": seeds, "first_step_mean": 75.0, "step_min": 0},   # seed 0 starts here
              {"state": 3, "seeds": seeds[1:], "first_step_mean": 80.0, "step_min": 70}]
    tr = [{"from": 0, "to": 1, "first_step": {str(s): 30 + 5 * s for s in seeds[1:]}},
          {"from": 1, "to": 3, "first_step": {str(s): 70 + 5 * s for s in seeds[1:]}},
          {"from": 3, "to": 2, "first_step": {str(s): 90 + 5 * s for s in seeds[1:]}}]
    a = {"states": states, "transitions": tr,
         "graph": {"edges": [{"source": t["from"], "target": t["to"]} for t in tr]}}
    x, y = graph_layout(a)  # type: ignore[arg-type]
    assert list(x) == [0, 1, 3, 2]  # 0 -> 1 -> 3 -> 2, left to right
    assert len({(round(float(i), 6), round(float(j), 6)) for i, j in zip(x, y)}) == 4  # never on top of each other


def test_labels_of_consecutive_k_not_fitted_are_one_label():
    from vt_core.report.dashboard.selection import _bad_rows

    table = [{"k": k, "status": "ok", "n_ok": 2} for k in range(1, 9)]
    table += [{"k": k, "status": "infeasible", "n_ok": 0, "failures": ["too few observations"]} for k in range(9, 17)]
    rows = _bad_rows({"table": table, "chosen_k": 8})  # type: ignore[typeddict-item]
    assert rows["k"] == list(range(9, 17)) and [lab for lab in rows["label"] if lab] == ["infeasible 9–16"]
