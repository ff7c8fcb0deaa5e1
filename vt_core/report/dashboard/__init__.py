"""The study dashboard: one standalone Bokeh HTML file with INLINE resources (opens offline), laid
out to stretch with the window (1280 to 2560 px and print).

Views, all in one palette per state (:mod:`vt_core.report.palette`) and linked:

- the state-transition graph (:mod:`.graph`), laid out from the graph (layers by first visit), node
  size by occupancy, edge width by the number of seeds taking it, arrows; tapping a state or a
  transition shows its explanation in the panel below (:mod:`.panel`: top features by the paper's
  gradient and by the change in within-state sd, mean changes in original units, the seeds that make
  it and when) and highlights the state in every view;
- model selection (:mod:`.selection`): BIC, AIC, held-out log L against k on integer ticks, k not
  fitted marked with the reason, the chosen k, and the bootstrap distribution of k;
- metric curves (:mod:`.curves`): one seed (decoded states as bands) or all seeds (mean and 10-90%
  band coloured by the modal state), the convergence threshold, long names and units, linear or log x;
- the state timeline (:mod:`.timeline`): ordered by convergence, by seed or grouped by path, labels on
  demand, following the curves' linear or log x;
- the table of states (:mod:`.table`), its feature columns chosen by the user.

Large studies: the curves show at most ``max_points`` checkpoints per seed (every n-th one, plus
every checkpoint where the decoded state changes, plus the last); bands and the timeline are drawn
from every checkpoint as run-length segments. The page says when curves are thinned.
"""

from vt_core.report.dashboard.page import MAX_POINTS, build_dashboard, render
from vt_core.report.outputs import segments, thin

__all__ = ["MAX_POINTS", "build_dashboard", "render", "segments", "thin"]
