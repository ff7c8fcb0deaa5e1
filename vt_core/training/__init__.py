"""Training seeds: the loop (``loop``), seed groups as one batched model (``groups``,
``group_record``), what a checkpoint records and resumes from (``checkpoint_record``), where
training stands (``position``), stopping at the next checkpoint (``interrupt``), and every check a
config must pass before anything is written (``preflight``)."""
