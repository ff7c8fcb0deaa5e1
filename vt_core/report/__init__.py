"""What people see and take away: sentences (``narrative``), the markdown report (``markdown``,
``compare_markdown``), the closing lines of a run (``closing``), what the dashboard and figures both
draw (``outputs``, ``palette``, ``labels``), the dashboard (``dashboard/``), paper figures
(``figures/``), the study as a DataTree (``datatree``: ``open_study``), tidy tables (``export``) and
whether a dashboard is being served (``serving``)."""
