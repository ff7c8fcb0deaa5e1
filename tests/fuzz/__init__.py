"""Fuzzing vt as a hostile user would (issue 17): malformed configs, damaged studies, payloads
planted in a study directory. Every test here drives the `vt` command in-process."""
