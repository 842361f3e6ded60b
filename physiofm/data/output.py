"""One writer per output, and no output over what the run reads.

`check_no_overlap` refuses an output inside an input or an input inside the output (a second run
would list its own shards as recordings). `OutputLock` makes a second run on the same output fail
fast, naming the run that holds it: locally an `flock` on `_progress/lock` (released by the
kernel when its process dies, however it dies); on an object store a lease object
`_progress/lease.json` that the holder renews while it runs and that expires `ttl_s` after a
crash.
"""
from __future__ import annotations

import json
import os
import posixpath
import secrets
import socket
import threading
import time
from typing import Any

from physiofm.data import storage


class OutputBusy(RuntimeError):
    """Another run is writing this output."""


def _key(uri: str) -> tuple[str, str]:
    """(scheme, path with symlinks resolved) of a URI, for comparing where things are."""
    if storage.is_remote(uri):
        return storage.scheme(uri), storage.strip_scheme(uri).rstrip("/")
    return "file", os.path.realpath(storage.strip_scheme(uri))


def _inside(path: str, folder: str, separator: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(separator) + separator)


def check_no_overlap(inputs: list[str], output: str) -> None:
    """ValueError when `output` lies inside an input, or an input inside `output`."""
    scheme, out = _key(output)
    separator = "/" if scheme != "file" else os.sep
    for uri in inputs:
        kind, path = _key(uri)
        if kind != scheme:
            continue
        if _inside(out, path, separator) or _inside(path, out, separator):
            where = "inside the input" if _inside(out, path, separator) and out != path else (
                "the input itself" if out == path else "around the input")
            raise ValueError(f"output {output} is {where} {uri}: a run would read its own windows as recordings "
                             "(and rejects them); choose an output outside every input")


class OutputLock:
    """Held by the run writing `progress_uri`'s output, from `acquire()` to `release()`."""

    def __init__(self, progress_uri: str, options: dict[str, Any] | None = None, ttl_s: float = 60.0):
        self.progress, self.options, self.ttl_s = progress_uri, options or {}, ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._handle = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ local: flock
    def acquire(self) -> None:
        if storage.is_remote(self.progress):
            self._acquire_lease()
            return
        import fcntl

        folder = storage.strip_scheme(self.progress)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "lock")
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputBusy(f"another run is preparing {os.path.dirname(folder)} ({holder}); wait for it to finish, "
                             "or choose another output") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.owner} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            import fcntl

            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
        if self._renewer is not None:
            self._stop.set()
            self._renewer.join(timeout=5)
            self._renewer = None
            try:
                lease = self._read_lease()
                if lease and lease.get("owner") == self.owner:
                    storage.remove(self._lease_uri, **self.options)
            except OSError:
                pass  # it expires by itself

    # ------------------------------------------------------------ object store: a lease
    @property
    def _lease_uri(self) -> str:
        return storage.join(self.progress, "lease.json")

    def _read_lease(self) -> dict | None:
        if not storage.exists(self._lease_uri, **self.options):
            return None
        try:
            return json.loads(storage.read_bytes(self._lease_uri, **self.options))
        except (ValueError, UnicodeDecodeError):
            return None  # half a lease is none

    def _write_lease(self) -> None:
        lease = {"owner": self.owner, "renewed_at": time.time(), "ttl_s": self.ttl_s}
        storage.write_bytes(self._lease_uri, json.dumps(lease).encode(), **self.options)

    def _acquire_lease(self) -> None:
        lease = self._read_lease()
        if lease and lease.get("owner") != self.owner and time.time() - lease.get("renewed_at", 0) < lease.get(
                "ttl_s", self.ttl_s):
            raise OutputBusy(self._busy(lease))
        self._write_lease()
        time.sleep(min(1.0, self.ttl_s / 20))  # two runs that wrote at once: the last write wins, the other sees it
        lease = self._read_lease()
        if not lease or lease.get("owner") != self.owner:
            raise OutputBusy(self._busy(lease or {}))
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="physiofm-output-lease", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self._write_lease()
            except OSError:
                continue  # the next renewal may get through before the lease expires

    def _busy(self, lease: dict) -> str:
        expires = lease.get("renewed_at", time.time()) + lease.get("ttl_s", self.ttl_s)
        output = posixpath.dirname(self.progress.rstrip("/"))
        return (f"another run is preparing {output} ({lease.get('owner', 'unknown')}, lease renewed "
                f"{time.time() - lease.get('renewed_at', time.time()):.0f} s ago); wait for it to finish or choose "
                f"another output (a crashed run's lease expires at {time.strftime('%H:%M:%S', time.localtime(expires))})")
