"""vt's analysis of any trajectories, at its documented import path; it lives in
:mod:`vt_core.analysis.trajectories`."""

from vt_core.analysis.trajectories import TrajectoryError, analyse_trajectories, hmm_config, read_table  # noqa: F401
