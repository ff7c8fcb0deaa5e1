"""Runs vt did not train: the user's own loop (``recorder``), framework callbacks (``callbacks``),
checkpoint files already on disk (``checkpoint_files``) and the config and study.json of such a
study (``studies``)."""
