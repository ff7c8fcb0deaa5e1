"""Configuration: pydantic models of a study config, loaded from TOML and validated at the edge,
with no side effects (nothing is built, read or written here). ``study_config`` (the study and its
sections), ``data_config`` (one model per task), ``external_config`` (studies vt did not train),
``messages`` (validation errors as one line per field), ``usercode`` (the one place where code a
config names is imported: metric plugins, model factories)."""
