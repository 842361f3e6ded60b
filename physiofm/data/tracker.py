"""The progress actor of a corpus preparation, in a module of its own: its process imports this
and Ray only, not the readers (MNE, wfdb, SciPy) the pipeline's workers need."""
from __future__ import annotations


class Tracker:
    """Which files the tasks of the current execution have started, when the first one began, and
    which files a worker's guard stopped (the process ended over them)."""

    def __init__(self):
        self.paths: set[str] = set()
        self.first_start: float | None = None
        self.stopped_files: dict[str, tuple[str, str]] = {}

    def started(self, paths: list[str], when: float) -> None:
        self.paths.update(paths)
        self.first_start = when if self.first_start is None else min(self.first_start, when)

    def stopped(self, path: str, reason: str, code: str) -> None:
        self.stopped_files[path] = (reason, code)

    def reset(self) -> tuple[set[str], float | None, dict[str, tuple[str, str]]]:
        state = (self.paths, self.first_start, self.stopped_files)
        self.paths, self.first_start, self.stopped_files = set(), None, {}
        return state
