"""What to read under the inputs of a run: one item per recording file or WFDB record.

A WFDB record is its header and everything it names: signal files of any stem
(`mixedsignals.hea` → `mixedsignals_e.dat`, `_p.dat`, `_r.dat`), and for a multi-segment record
its segment headers, their signal files and its layout header. Files that share a header's stem
(annotations, `.xyz`) belong to it too. A segment is never a record of its own while its master
is in the input; a signal file that no header names is listed, to be rejected with that reason.
"""
from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from physiofm.data import storage
from physiofm.data.readers import FORMAT_EXTENSIONS, check_format, extension
from physiofm.data.readers.wfdb_header import named_files

# Files that document a corpus rather than hold signal; listed in corpus.json as ignored.
DOCUMENT_EXTENSIONS = {".csv", ".tsv", ".txt", ".md", ".json", ".html", ".pdf", ".xls", ".xlsx", ".png", ".jpg"}
DOCUMENT_NAMES = {"RECORDS", "LICENSE", "ANNOTATORS", "SHA256SUMS", "label.mat"}
MAX_HEADER_BYTES = 1 << 20  # a larger ".hea" names nothing at listing time; its reader says what it is


@dataclass(frozen=True)
class InputFile:
    path: str
    fmt: str
    bytes: int


def list_inputs(inputs: list[str], fmt: str = "auto",
                **storage_options: Any) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Recordings to read under `inputs` (files or folders, walked recursively) and ignored files.

    The inputs are one set of files: a file reached twice (an input given twice or three ways, a
    folder inside another, two symbolic links to one file) is listed once, under its own name when
    that is among them (not a link), else the first of its names in sort order. A WFDB record is listed once, by its (master) header, with the bytes of
    every file it names. With an explicit `fmt`, only that format's extension is read. A file named
    directly is always read (or rejected), unless a record it belongs to is listed.
    """
    check_format(fmt)
    aliases: dict[str, list[tuple[str, int]]] = defaultdict(list)
    direct: set[str] = set()
    for uri in inputs:
        sizes = storage.walk(uri, **storage_options)
        named_directly = len(sizes) == 1 and next(iter(sizes)) == storage.to_uri(uri, storage.strip_scheme(uri))
        for path, size in sizes.items():
            aliases[storage.real_path(path)].append((path, size))
            if named_directly:
                direct.add(storage.real_path(path))
    sizes = {}
    named = set()
    for real, names in aliases.items():
        path, size = min(names, key=lambda n: (n[0] != real, n[0]))
        sizes[path] = size
        if real in direct:
            named.add(path)
    sizes = dict(sorted(sizes.items()))
    records: dict[str, InputFile] = {}
    ignored: dict[str, str] = {}
    claimed: set[str] = set()
    if fmt in ("auto", "wfdb"):
        members, orphans = wfdb_records(sizes, lambda paths: _read_headers(paths, sizes, storage_options))
        for header, files in members.items():
            records[header] = InputFile(header, fmt, sum(sizes[f] for f in files))
            claimed |= files
        for path in orphans:  # read as WFDB, whose reader rejects them with what is wrong
            records[path] = InputFile(path, "wfdb", sizes[path])
            claimed.add(path)
    for path, size in sizes.items():
        if path in claimed:
            continue
        why = None if path in named else _ignore_reason(path, fmt)
        if why:
            ignored[path] = why
        else:
            records[path] = InputFile(path, fmt, size)
    return [records[p] for p in sorted(records)], sorted((p, why) for p, why in ignored.items() if p not in records)


def check_inputs(inputs: list[str], fmt: str = "auto",
                 **storage_options: Any) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """`list_inputs`, or a ValueError naming the input as given when there is nothing to read: a
    path that does not exist, or a folder without recordings. Lists only: nothing is written."""
    for uri in inputs:
        if not storage.exists(uri, **storage_options):
            raise ValueError(f"{uri}: no such file or folder")
    items, ignored = list_inputs(inputs, fmt, **storage_options)
    if not items:
        why = (f"{len(ignored)} other files, e.g. {ignored[0][0]} ({ignored[0][1]})" if ignored else "no files at all")
        raise ValueError(f"{', '.join(inputs)} holds no recordings to read ({why})")
    return items, ignored


def wfdb_records(sizes: dict[str, int], read_headers) -> tuple[dict[str, set[str]], list[str]]:
    """({record header: every file of the record}, signal files no header names) of the WFDB
    headers among `sizes`' paths. `read_headers(paths)` gives {path: text}; headers are read only in
    folders where stems do not settle it (more than one header, or files of another stem)."""
    folders: dict[str, list[str]] = defaultdict(list)
    for path in sizes:
        folders[_dirname(path)].append(path)
    records: dict[str, set[str]] = {}
    orphans: list[str] = []
    for folder, paths in folders.items():
        headers = sorted(p for p in paths if extension(p) == ".hea")
        if not headers:
            continue
        header_of_stem = {_stem(h): h for h in headers}
        by_stem: dict[str, set[str]] = defaultdict(set)
        other = []
        for path in paths:
            if extension(path) != ".hea":
                if _stem(path) in header_of_stem:
                    by_stem[_stem(path)].add(path)
                else:
                    other.append(path)
        names = {}
        if len(headers) > 1 or other:
            for header, text in read_headers(headers).items():
                names[header] = named_files(text)
        master_of: dict[str, str] = {}
        for header, (_, segments) in names.items():
            for segment in segments:
                part = _join(folder, f"{segment}.hea")
                if part in names and part != header:
                    master_of.setdefault(part, header)
        for header in headers:
            root, seen = header, {header}
            while root in master_of and master_of[root] not in seen:  # a cycle of masters ends where it closes
                root = master_of[root]
                seen.add(root)
            files = records.setdefault(root, {root})
            files.add(header)
            files |= by_stem[_stem(header)]
            signal_names = names.get(header, ([], []))[0]
            files |= {p for p in (_join(folder, n) for n in signal_names) if p in sizes}
        members = set().union(*(records[h] for h in records if _dirname(h) == folder))
        orphans += [p for p in other if p not in members and extension(p) == ".dat"]
    return records, sorted(orphans)


def _read_headers(paths: list[str], sizes: dict[str, int], options: dict[str, Any]) -> dict[str, str]:
    """{path: header text} of the headers that could be read (one request per header, in bulk on
    object stores); the rest are left to their readers."""
    wanted = [p for p in paths if sizes.get(p, 0) <= MAX_HEADER_BYTES]
    if not wanted:
        return {}
    if storage.is_remote(wanted[0]):
        fs, _ = storage.fsspec_filesystem(wanted[0], **options)
        keys = {storage.strip_scheme(p): p for p in wanted}
        found = storage.retry(lambda: fs.cat(list(keys), on_error="return"), what=f"read {len(keys)} WFDB headers")
        raw = {keys[k]: v for k, v in found.items() if isinstance(v, bytes)}
    else:
        raw = {}
        for path in wanted:
            try:
                with open(storage.strip_scheme(path), "rb") as handle:
                    raw[path] = handle.read()
            except OSError:
                continue
    return {path: data.decode("utf-8", errors="replace") for path, data in raw.items()}


def _dirname(path: str) -> str:
    return posixpath.dirname(path) if storage.is_remote(path) else os.path.dirname(path)


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if storage.is_remote(folder) else os.path.join(folder, name)


def _stem(path: str) -> str:
    return os.path.splitext(path)[0]


def _ignore_reason(path: str, fmt: str) -> str | None:
    name, ext = os.path.basename(path), extension(path)
    if name in DOCUMENT_NAMES or name.split(".")[0] in DOCUMENT_NAMES or ext in DOCUMENT_EXTENSIONS:
        return "documentation or metadata, not a recording"
    if fmt != "auto" and ext != FORMAT_EXTENSIONS[fmt]:
        return f"extension {ext!r} is not read with format {fmt!r}"
    return None
