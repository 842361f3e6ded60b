"""Run-time limits on one file in a worker: wall time and the worker's memory.

What a file declares is checked before it is decoded (`budget.py`); what no declaration bounds (a
decoder's own appetite, a slow path in a library) is watched while it runs. `FileGuard` samples the
worker's resident memory and the file's elapsed time from a thread. Past a limit it raises
`FileLimitExceeded` in the thread processing the file (at its next Python instruction), so that the
file ends as a rejection and the worker goes on with the next one. A limit that stays passed (a
long native call, a library that swallows the exception) ends the worker process itself, after
`on_hard_stop(path, reason, code)` has said which file did it: the worker's death is then that
file's rejection, never a retry.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterator

from physiofm.data.budget import mib

HARD_FACTOR = 1.5  # memory beyond this multiple of the limit ends the worker at once
GRACE_S = 10.0  # a raised limit not honoured within this ends the worker
OWN_SHARE = 0.1  # a file is held to the memory limit only once it grew the worker by this share of it


class FileLimitExceeded(BaseException):
    """A file passed a run-time limit. A BaseException, so that readers' `except Exception` clauses
    (which turn a library's errors into reasons) never take it for a decoding error."""

    def __init__(self, reason: str = "", code: str = "too_large"):
        super().__init__(reason)
        self.reason, self.code = reason, code


def resident_bytes() -> int:
    """Resident memory of this process (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss


class FileGuard:
    def __init__(self, seconds_per_file: float, memory_bytes: int | None,
                 on_hard_stop: Callable[[str, str, str], None] | None = None, interval_s: float = 0.02):
        self.seconds, self.memory, self.interval_s = seconds_per_file, memory_bytes, interval_s
        self.on_hard_stop, self.grace_s = on_hard_stop, GRACE_S
        self.lock = threading.Lock()
        self.current: tuple[str, int, float, int] | None = None  # (path, thread id, start, resident at start)
        self.fired: tuple[str, float, str, str] | None = None  # (path, when, reason, code) of a raised limit
        self.peak = 0
        self._thread = threading.Thread(target=self._watch, name="physiofm-file-guard", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def watch(self, path: str) -> Iterator[None]:
        """Limits apply to the calling thread while `path` is processed in this block."""
        start = resident_bytes()
        if self.memory is not None and start > self.memory / 2:
            start = _trim()  # memory freed by earlier files but kept by the allocator is no file's
        with self.lock:
            self.current, self.fired = (path, threading.get_ident(), time.monotonic(), start), None
        try:
            yield
        finally:
            with self.lock:
                if self.fired is not None:  # raised but not yet delivered: withdraw it
                    _async_raise(threading.get_ident(), None)
                self.current = self.fired = None

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval_s)
            rss = resident_bytes()
            self.peak = max(self.peak, rss)
            with self.lock:
                if self.current is None:
                    continue
                path, thread, started, start_rss = self.current
                elapsed = time.monotonic() - started
                # over the limit, and by this file's doing (not memory earlier files left behind)
                over_memory = self.memory is not None and rss > self.memory and rss - start_rss > OWN_SHARE * self.memory
                if self.fired is None:
                    if over_memory:
                        self._raise(path, thread, f"needs more than {mib(self.memory)} of memory to process (the "
                                                  f"worker's limit; it reached {mib(rss)} on this file)", "too_large")
                    elif elapsed > self.seconds:
                        self._raise(path, thread, f"processing took longer than {self.seconds:g} s, the per-file limit "
                                                  "(budget seconds_per_file)", "too_slow")
                    continue
                _, when, reason, code = self.fired
                hard_memory = self.memory is not None and rss > HARD_FACTOR * self.memory
                if hard_memory or time.monotonic() - when > self.grace_s:
                    self._hard_stop(path, reason if not hard_memory else
                                    f"needs more than {mib(self.memory)} of memory to process (the worker's limit; "
                                    f"it reached {mib(rss)} on this file and was stopped)", code)

    def _raise(self, path: str, thread: int, reason: str, code: str) -> None:
        self.fired = (path, time.monotonic(), reason, code)
        FileLimitExceeded.pending = (reason, code)
        _async_raise(thread, _Raised)

    def _hard_stop(self, path: str, reason: str, code: str) -> None:
        try:
            if self.on_hard_stop is not None:
                self.on_hard_stop(path, reason, code)
        finally:
            os._exit(70)


class _Raised(FileLimitExceeded):
    """What the guard raises: an exception class (the only thing an asynchronous raise can carry);
    its reason is the guard's latest."""

    def __init__(self):
        reason, code = getattr(FileLimitExceeded, "pending", ("a run-time limit was passed", "too_large"))
        super().__init__(reason, code)


def _trim() -> int:
    """Return freed heap memory to the system where the C library can (glibc), then measure."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return resident_bytes()


def _async_raise(thread: int, exception: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread),
                                               ctypes.py_object(exception) if exception is not None else None)
