"""Storage URIs: local paths and `s3://bucket/key`, through fsspec (s3fs) and pyarrow.

The S3 endpoint comes from the `endpoint_url` option or the standard `AWS_ENDPOINT_URL`
variable; credentials come from the usual AWS variables or profile (never from configs, never
logged). Transient storage errors are retried with exponential backoff by `retry`.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fsspec

T = TypeVar("T")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
SUPPORTED_SCHEMES = ("file", "s3")


def scheme(uri: str) -> str:
    match = _SCHEME.match(uri)
    name = match.group(1).lower() if match else "file"
    if name not in SUPPORTED_SCHEMES:
        raise ValueError(f"unsupported URI scheme {name!r} in {uri!r}; allowed: {SUPPORTED_SCHEMES}")
    return name


def is_remote(uri: str) -> bool:
    return scheme(uri) != "file"


def strip_scheme(uri: str) -> str:
    """The filesystem path of a URI: `bucket/key` for s3, an absolute local path otherwise."""
    if scheme(uri) == "s3":
        return _SCHEME.sub("", uri).rstrip("/")
    path = _SCHEME.sub("", uri) if uri.startswith("file://") else uri
    return os.path.abspath(os.path.expanduser(path))


def join(uri: str, *parts: str) -> str:
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def endpoint_url(options: dict[str, Any] | None = None) -> str | None:
    return (options or {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or None


def fsspec_filesystem(uri: str, **options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """(fsspec filesystem, path inside it) for `uri`; `options` go to s3fs (endpoint_url, key...)."""
    if scheme(uri) == "s3":
        import s3fs

        options = dict(options)
        endpoint = endpoint_url(options)
        options.pop("endpoint_url", None)
        if endpoint:
            options["client_kwargs"] = {**options.get("client_kwargs", {}), "endpoint_url": endpoint}
        return s3fs.S3FileSystem(**options), strip_scheme(uri)
    return fsspec.filesystem("file"), strip_scheme(uri)


def pyarrow_filesystem(uri: str, *, via_fsspec: bool = False, **options: Any):
    """(pyarrow filesystem, path) for Ray Data reads/writes and Ray Train `storage_filesystem`.

    S3 uses pyarrow's native client with `endpoint_override` (pyarrow ignores `AWS_ENDPOINT_URL`).
    Small objects go out in one PutObject (`allow_delayed_open`); `via_fsspec=True` wraps s3fs
    instead, for servers whose multipart upload pyarrow rejects (moto 5.2.1 for objects > 10 MiB).
    """
    import pyarrow.fs as pafs

    if scheme(uri) != "s3":
        return pafs.LocalFileSystem(), strip_scheme(uri)
    if via_fsspec:
        fs, path = fsspec_filesystem(uri, **options)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    kwargs: dict[str, Any] = {"allow_delayed_open": True}
    endpoint = endpoint_url(options)
    if endpoint:
        kwargs["endpoint_override"] = endpoint
    region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    for ours, theirs in (("key", "access_key"), ("secret", "secret_key"), ("token", "session_token")):
        if options.get(ours):
            kwargs[theirs] = options[ours]
    return pafs.S3FileSystem(**kwargs), strip_scheme(uri)


def exists(uri: str, **options: Any) -> bool:
    fs, path = fsspec_filesystem(uri, **options)
    return retry(lambda: fs.exists(path))


def to_uri(uri_like: str, path: str) -> str:
    """The URI of `path` (a filesystem path) on the same storage as `uri_like`."""
    return f"s3://{path}" if scheme(uri_like) == "s3" else path


# ---------------------------------------------------------------- retries

_TRANSIENT_TEXT = re.compile(
    r"SlowDown|Throttl|TooManyRequests|RequestTimeout|RequestTimeTooSkewed|InternalError|"
    r"ServiceUnavailable|\b(429|500|502|503|504)\b|timed? ?out|Connection (reset|refused|aborted)",
    re.IGNORECASE,
)
_TRANSIENT_TYPES = ("Timeout", "Connection", "Throttl", "IncompleteRead", "ResponseStreaming")


def is_transient(error: BaseException) -> bool:
    """Timeouts, throttling, connection drops and 5xx: worth retrying. Missing or denied: not."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    if any(word in cls.__name__ for cls in type(error).__mro__ for word in _TRANSIENT_TYPES):
        return True
    return bool(_TRANSIENT_TEXT.search(str(error)))


# What an OSError's errno says about the storage (not the file's content): full, denied,
# read-only, unreachable, gone, out of handles.
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "EIO", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "ECONNABORTED",
    "EAGAIN", "EBUSY", "ENFILE", "EMFILE", "ENOENT", "ESTALE", "ENOTCONN", "EHOSTUNREACH", "ENETUNREACH",
    "ENETDOWN", "EPIPE") if hasattr(errno, name))
_STORAGE_TEXT = re.compile(r"AWS Error|No space left|Disk quota|Permission denied|Access ?Denied|Read-only file "
                           r"system|Forbidden|\b403\b", re.IGNORECASE)


def is_storage_error(error: BaseException) -> bool:
    """An error of the storage itself (full, denied, throttled, unreachable, a file gone), which a
    run must never blame on a recording: retry it, or stop and say so."""
    if isinstance(error, StorageError) or is_transient(error):
        return True
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return True
    return isinstance(error, OSError) and bool(_STORAGE_TEXT.search(str(error)[:2000]))


def describe(error: BaseException) -> str:
    """A storage error for a person: the operating system's words and errno name, or the store's."""
    if isinstance(error, OSError) and error.errno in errno.errorcode:
        where = f" ({error.filename})" if error.filename else ""
        return f"{error.strerror or os.strerror(error.errno)} [{errno.errorcode[error.errno]}]{where}"
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay_s: float = 0.5
    max_delay_s: float = 20.0

    def __post_init__(self):
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")


class StorageError(OSError):
    """A storage operation that kept failing (or failed for good); the message says which."""


def retry(operation: Callable[[], T], policy: RetryPolicy = RetryPolicy(), what: str = "storage",
          sleep: Callable[[float], None] = time.sleep) -> T:
    delay = policy.first_delay_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as error:  # noqa: BLE001 - classified just below
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                raise StorageError(
                    f"{what}: still failing after {attempt} attempts: {type(error).__name__}: {error}"
                ) from error
            sleep(min(delay, policy.max_delay_s))
            delay *= 2
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- listing and local copies

def walk(uri: str, **options: Any) -> dict[str, int]:
    """{file URI: size in bytes} of every file under `uri` (recursively), sorted; `uri` itself when
    it is a file. Local folders are walked through symbolic links (each real folder once)."""
    if not is_remote(uri):
        return _walk_local(strip_scheme(uri))
    fs, path = fsspec_filesystem(uri, **options)
    if retry(lambda: fs.isfile(path), what=f"stat {uri}"):
        return {to_uri(uri, path): int(retry(lambda: fs.size(path), what=f"stat {uri}"))}
    if not retry(lambda: fs.isdir(path), what=f"stat {uri}"):
        raise FileNotFoundError(f"input not found: {uri}")
    found = retry(lambda: fs.find(path, detail=True), what=f"list {uri}")
    return {to_uri(uri, p): int(info.get("size") or 0) for p, info in sorted(found.items())}


def _walk_local(path: str) -> dict[str, int]:
    if os.path.isfile(path):
        return {path: os.path.getsize(path)}
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input not found: {path}")
    found: dict[str, int] = {}
    visited: set[str] = set()
    for folder, folders, files in os.walk(path, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link back to a folder already walked (a cycle, or the same folder twice)
            folders[:] = []
            continue
        visited.add(real)
        folders.sort()
        for name in files:
            file = os.path.join(folder, name)
            try:
                found[file] = os.path.getsize(file)
            except OSError:
                found[file] = 0  # a dangling link: listed, and its reader says what is wrong
    return dict(sorted(found.items()))


def real_path(uri: str) -> str:
    """What `uri` is, whatever it is called: symbolic links resolved for local files."""
    return uri if is_remote(uri) else os.path.realpath(strip_scheme(uri))


@contextlib.contextmanager
def local_files(uris: list[str], policy: RetryPolicy = RetryPolicy(), **options: Any) -> Iterator[list[str]]:
    """Local paths of `uris`: the files themselves when local, else copies in a temporary folder.

    Remote copies keep their base names side by side, so multi-file records (WFDB .hea + .dat)
    read as they would locally; the folder is removed on exit.
    """
    if not uris or not is_remote(uris[0]):
        yield [strip_scheme(u) for u in uris]
        return
    tmp = tempfile.mkdtemp(prefix="physiofm-")
    try:
        local = []
        for uri in uris:
            fs, path = fsspec_filesystem(uri, **options)
            target = os.path.join(tmp, posixpath.basename(path))
            retry(lambda: fs.get_file(path, target), policy, what=f"download {uri}")
            local.append(target)
        yield local
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_bytes(uri: str, policy: RetryPolicy = RetryPolicy(), **options: Any) -> bytes:
    fs, path = fsspec_filesystem(uri, **options)
    return retry(lambda: fs.cat_file(path), policy, what=f"read {uri}")


TEMPORARY_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")  # what `write_bytes` writes before it renames


def write_bytes(uri: str, data: bytes, **options: Any) -> None:
    """Write `data` at `uri` atomically: a reader sees the old content or the new, never a part.
    Locally a temporary file beside it, synced, then renamed over it; on an object store one PUT
    (an object appears whole or not at all)."""
    fs, path = fsspec_filesystem(uri, **options)
    if is_remote(uri):
        retry(lambda: fs.pipe_file(path, data), what=f"write {uri}")
        return
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.tmp-{secrets.token_hex(4)}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def rename(source: str, target: str, **options: Any) -> None:
    """Move `source` to `target` on the same storage (a copy then a delete on object stores)."""
    fs, path = fsspec_filesystem(source, **options)
    _, destination = fsspec_filesystem(target, **options)
    if is_remote(source):
        retry(lambda: fs.copy(path, destination), what=f"copy {source}")
        retry(lambda: fs.rm(path), what=f"remove {source}")
    else:
        os.replace(path, destination)


def remove(uri: str, recursive: bool = False, **options: Any) -> None:
    fs, path = fsspec_filesystem(uri, **options)
    if retry(lambda: fs.exists(path), what=f"stat {uri}"):
        retry(lambda: fs.rm(path, recursive=recursive), what=f"remove {uri}")
