"""A study opened once: :class:`Study` holds where it lives, every path under it and its config
(read and verified from ``study.json`` when it is opened).

A task opens its study once (``Study.open(path_or_url)``) and passes the handle down. Everything
that takes a study takes the handle too: :func:`~vt_core.storage.location.location`,
:func:`~vt_core.storage.layout.layout` and :func:`~vt_core.storage.study.load_study` return its
parts without reading anything again, and it prints as its location in messages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

from vt_core.config.study_config import StudyConfig
from vt_core.storage.layout import Layout, layout
from vt_core.storage.location import Location, Opened, location, url
from vt_core.storage.run_store import RunStore
from vt_core.storage.study import load_study, open_run


@dataclass(frozen=True, eq=False)
class Study(Opened):
    location: Location
    layout: Layout
    config: StudyConfig

    @classmethod
    def open(cls, study: StudyRef) -> Study:
        """The handle of the study at ``study`` (a path, a URL, or a handle, returned as it is)."""
        if isinstance(study, Study):
            return study
        where = location(study)
        return cls(where, layout(where), load_study(where))

    def run(self, seed: int) -> RunStore:
        """Seed ``seed``'s run store, checked to be this config's (:func:`~vt_core.storage.study.open_run`)."""
        return open_run(self.location, seed, self.config)

    def __str__(self) -> str:
        return url(self.location)

    def __fspath__(self) -> str:
        return str(self.location)


#: what a function that takes a study accepts
StudyRef = Union[str, os.PathLike, Location, Study]
