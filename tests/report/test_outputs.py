import numpy as np
import xarray as xr

from vt_core.report.outputs import band, modal_state, path_groups, path_of, seed_orders, state_grid

PATHS = {"0": {"steps": [0, 10, 20, 30], "states": [0, 0, 1, 2]},
         "1": {"steps": [0, 10, 20, 30], "states": [0, 2, 2, 2]},
         "2": {"steps": [0, 10, 20, 30], "states": [0, 1, 1, 2]},
         "3": {"steps": [0, 10, 20, 30], "states": [0, 0, 0, 1]}}
CONV = {"0": 20, "1": 10, "2": None, "3": 30}


def test_paths_and_orders_of_the_seeds():
    assert path_of([0, 0, 1, 1, 0, 2]) == (0, 1, 0, 2) and path_of([]) == ()
    orders = seed_orders(PATHS, CONV)
    assert orders["seed"] == ["0", "1", "2", "3"]
    assert orders["convergence"] == ["1", "0", "3", "2"]  # never converged last
    # the commonest path first (0 -> 1 -> 2: seeds 0 and 2, by convergence), then the others by path
    assert path_groups(PATHS, CONV) == [((0, 1, 2), ["0", "2"]), ((0, 1), ["3"]), ((0, 2), ["1"])]
    assert orders["path"] == ["0", "2", "3", "1"]


def test_modal_state_and_band_against_a_naive_loop():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 4, 2))
    values[1, 3, 0] = np.nan
    da = xr.DataArray(values, dims=("seed", "step", "metric"),
                      coords={"seed": [0, 1, 2, 3], "step": [0, 10, 20, 30], "metric": ["a", "b"]})
    grid = state_grid(da, PATHS)
    assert grid.tolist() == [PATHS[s]["states"] for s in "0123"]
    naive = [max(range(3), key=lambda s: (sum(grid[:, t] == s), -s)) for t in range(4)]
    assert modal_state(grid).tolist() == naive == [0, 0, 1, 2]
    b = band(da, "a")
    for t in range(4):
        col = [v for v in values[:, t, 0] if np.isfinite(v)]
        assert np.isclose(b["mean"][t], np.mean(col))
        assert np.isclose(b["lo"][t], np.quantile(col, 0.1)) and np.isclose(b["hi"][t], np.quantile(col, 0.9))
