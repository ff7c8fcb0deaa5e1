"""Everything on disk: where a study lives (``location``: paths, URLs, atomic I/O), every path under
it (``layout``), the study directory (``study``: study.json, lock; ``seed_status``; ``handle``: a study
opened once, passed down instead of its path), one Zarr store per
seed (``run_store``, its array names and units in ``schema``, its chunks in ``chunks``), resume files
(``resume_file``), checks of what is stored (``run_integrity`` for run stores, ``output_integrity``
for what the analysis derived) and the background writer (``writer``, ``writer_thread``)."""
