"""The on-storage layout of a prepared corpus and its bookkeeping.

    OUTPUT/windows/*.parquet      window rows (Ray tensor columns + metadata), written by Ray Data
    OUTPUT/manifest.parquet       one row per input file: path, status, reason, n_windows, ...
    OUTPUT/corpus.json            preset/config, tensor shapes, counts: what training validates
    OUTPUT/_progress/config.json  the preset and format this output is being prepared with
    OUTPUT/_progress/{commit}.parquet   manifest rows of finished recordings, each naming (column
                                  `commit`) the prefix of the window files that hold its windows
    OUTPUT/_progress/attempts/{execution}.json   one per streaming execution, written before it
                                  starts: the window files it may write are `{execution}-*_NNNNN.parquet`
    OUTPUT/_progress/lock         held by the run writing the output (`output.OutputLock`)

A recording counts as done only once a commit file holds its row; window files whose prefix no
committed row names are leftovers of an interrupted or retried task. They are removed only when
they are the pipeline's own: named as its shards and by an execution it recorded. Nothing else in
the output is ever deleted, and readers read only the committed shards. Commits, the manifest and
corpus.json are written atomically; a commit file that cannot be read (left by a crash of an older
version, or damaged) is set aside as `*.corrupt`, named, and its recordings are done again.
"""
from __future__ import annotations

import io
import json
import posixpath
import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from physiofm.data import storage
from physiofm.data.recording import REASON_CODES

MANIFEST_SCHEMA = pa.schema([
    ("path", pa.string()), ("status", pa.string()), ("reason", pa.string()), ("n_windows", pa.int64()),
    ("n_windows_rejected", pa.int64()), ("format", pa.string()), ("dataset", pa.string()),
    ("subject", pa.string()), ("n_trials", pa.int64()), ("duration_s", pa.float64()), ("sfreq", pa.float64()),
    ("channels", pa.string()), ("shapes", pa.string()), ("notes", pa.string()), ("bytes", pa.int64()),
    ("seconds", pa.float64()), ("retryable", pa.bool_()), ("commit", pa.string()),
    # Added later: commits written before have neither; `committed_rows` fills them (reason_code
    # 'unclassified' for their rejections), so outputs of earlier versions still resume.
    ("reason_code", pa.string()), ("channels_used", pa.string()),
])
# Names of what the pipeline writes: shards `{execution}-{attempt}_{index}.parquet` (executions as
# `shards.new_prefix()`), commits `{stamp}-{sequence}.parquet`.
_STAMP = r"\d{8}T\d{12}-[0-9a-f]{8}"
SHARD_FILE = re.compile(rf"^(?P<prefix>(?P<execution>{_STAMP})(?:-[0-9a-f]{{8}})?)_\d{{5}}\.parquet$")
COMMIT_FILE = re.compile(rf"^{_STAMP}-\d{{5}}\.parquet$")
OUTPUT_NAMES = ("windows", "manifest.parquet", "corpus.json", "_progress")
METADATA_COLUMNS = ("recording", "dataset", "subject", "session", "trial", "window_index", "window_start_s",
                    "label", "labels")


class CorpusLayout:
    def __init__(self, output: str, storage_options: dict[str, Any] | None = None):
        self.output = output.rstrip("/") if storage.is_remote(output) else output
        self.options = storage_options or {}
        self.fs = storage.fsspec_filesystem(self.output, **self.options)[0]
        self.windows = storage.join(self.output, "windows")
        self.manifest = storage.join(self.output, "manifest.parquet")
        self.corpus_json = storage.join(self.output, "corpus.json")
        self.progress = storage.join(self.output, "_progress")
        self.attempts = storage.join(self.progress, "attempts")
        self.config_json = storage.join(self.progress, "config.json")
        self.set_aside: list[tuple[str, str]] = []  # (commit file, why) set aside by `committed_rows`

    # ------------------------------------------------------------ files
    def _path(self, uri: str) -> str:
        return storage.fsspec_filesystem(uri, **self.options)[1]

    def _list(self, uri: str) -> list[str]:
        path = self._path(uri)
        self.fs.invalidate_cache()  # Ray's writers go around this client: never trust its listing cache
        if not storage.retry(lambda: self.fs.exists(path)):
            return []
        return sorted(storage.retry(lambda: self.fs.ls(path, detail=False)))

    def _uri(self, path: str) -> str:
        return storage.to_uri(self.output, path)

    def window_files(self) -> list[str]:
        return [p for p in self._list(self.windows) if p.endswith(".parquet")]

    def committed_window_files(self, rows: list[dict]) -> list[str]:
        """The window files that committed rows name (by their prefix): what a corpus holds."""
        prefixes = {r["commit"] for r in rows if r["status"] == "ok" and r["n_windows"]}
        return [p for p in self.window_files() if posixpath.basename(p).split("_", 1)[0] in prefixes]

    # ------------------------------------------------------------ ownership
    def is_ours(self) -> bool:
        """Whether the pipeline recorded preparing this output (its `_progress` config or lock)."""
        return any(storage.exists(storage.join(self.progress, name), **self.options) for name in ("config.json", "lock"))

    def check_ours(self) -> None:
        """ValueError when the output holds what the pipeline would write (windows/, manifest, ...)
        without the pipeline's record of writing it: those are someone else's files."""
        if self.is_ours():
            return
        found = [name for name in OUTPUT_NAMES if storage.exists(storage.join(self.output, name), **self.options)]
        if found:
            raise ValueError(f"{self.output} holds {', '.join(found)} that physiofm has no record of writing (no "
                             "_progress/config.json): it never writes into, or deletes from, a folder it did not "
                             "create; choose a new or empty output")

    def record_execution(self, execution: str) -> None:
        """Record, before it starts, that an execution may write shards named `{execution}-*`."""
        self.write_json(storage.join(self.attempts, f"{execution}.json"), {"execution": execution})

    def executions(self) -> set[str]:
        return {posixpath.basename(p)[: -len(".json")] for p in self._list(self.attempts) if p.endswith(".json")}

    def reset(self) -> None:
        """Remove what the pipeline wrote into this output (nothing else): before `overwrite`."""
        if not self.is_ours():
            self.check_ours()
            return
        rows = self.committed_rows()
        executions = self.executions()
        prefixes = {r["commit"] for r in rows}
        for path in self.window_files():
            match = SHARD_FILE.match(posixpath.basename(path))
            if match and (match["prefix"] in prefixes or match["execution"] in executions):
                storage.retry(lambda p=path: self.fs.rm(p))
        for path in self._list(self.attempts):
            storage.retry(lambda p=path: self.fs.rm(p))
        for path in self._list(self.progress):
            name = posixpath.basename(path)
            if COMMIT_FILE.match(name) or name.endswith(".corrupt") or storage.TEMPORARY_NAME.match(name) or \
                    (name.endswith(".parquet") and name.split("_", 1)[0] in prefixes):
                storage.retry(lambda p=path: self.fs.rm(p))
        for uri in (self.manifest, self.corpus_json, self.config_json):
            storage.remove(uri, **self.options)

    def read_json(self, uri: str) -> dict | None:
        if not storage.exists(uri, **self.options):
            return None
        data = storage.read_bytes(uri, **self.options)
        try:
            return json.loads(data)
        except ValueError:
            raise ValueError(f"{uri} is not readable JSON ({len(data)} bytes; truncated or damaged): set it aside "
                             "(rename it) to go on without it, or prepare into a new output") from None

    def write_json(self, uri: str, content: dict) -> None:
        storage.write_bytes(uri, json.dumps(content, indent=2, sort_keys=True).encode(), **self.options)

    # ------------------------------------------------------------ commits
    def commit(self, name: str, rows: list[dict]) -> None:
        """Record `rows` (manifest rows of finished files) as done: the commit point, written
        atomically. A row's `commit` names the prefix of the window files holding its windows
        (default: `name`)."""
        table = pa.Table.from_pylist([{**row, "commit": row.get("commit") or name} for row in rows],
                                     schema=MANIFEST_SCHEMA)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(storage.join(self.progress, f"{name}.parquet"), sink.getvalue(), **self.options)

    def committed_rows(self) -> list[dict]:
        """Manifest rows of every commit, the latest row per path winning (commits sort by time).
        A commit file that does not read is set aside as `*.corrupt` (listed in `set_aside`)."""
        latest: dict[str, dict] = {}
        for path in self._list(self.progress):
            if not path.endswith(".parquet"):
                continue
            data = storage.retry(lambda p=path: self.fs.cat_file(p))
            try:
                rows = pq.read_table(io.BytesIO(data)).to_pylist()
            except (pa.ArrowException, OSError, ValueError) as error:
                uri = self._uri(path)
                storage.rename(uri, uri + ".corrupt", **self.options)
                self.set_aside.append((uri, f"{len(data)} bytes, not a readable commit ({str(error)[:120]})"))
                continue
            for row in rows:
                row.setdefault("reason_code", "unclassified" if row["status"] == "rejected" else "")
                row.setdefault("channels_used", "[]")
                latest[row["path"]] = row
        return [latest[p] for p in sorted(latest)]

    def remove_uncommitted_windows(self, committed: set[str]) -> list[str]:
        """Delete the pipeline's own window files that no commit names (an interrupted or retried
        attempt): named as its shards, by an execution it recorded. Returns their names."""
        executions = self.executions()
        stale = []
        for path in self._list(self.windows):
            match = SHARD_FILE.match(posixpath.basename(path))
            if match and match["prefix"] not in committed and match["execution"] in executions:
                stale.append(path)
        for path in stale:
            storage.retry(lambda p=path: self.fs.rm(p))
        return [posixpath.basename(p) for p in stale]

    def foreign_files(self, committed: set[str]) -> list[str]:
        """Files under windows/ that are neither committed shards nor the pipeline's own leftovers:
        never read, never removed."""
        executions = self.executions()
        out = []
        for path in self._list(self.windows):
            name = posixpath.basename(path)
            match = SHARD_FILE.match(name)
            if name.split("_", 1)[0] in committed or (match and match["execution"] in executions):
                continue
            out.append(name)
        return out

    def remove_temporary_files(self) -> None:
        """Temporary files of atomic writes a crash left (named by `storage.write_bytes`)."""
        for folder in (self.output, self.progress, self.attempts):
            for path in self._list(folder):
                if storage.TEMPORARY_NAME.match(posixpath.basename(path)):
                    storage.retry(lambda p=path: self.fs.rm(p))

    def write_manifest(self, rows: list[dict]) -> None:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), sink)
        storage.write_bytes(self.manifest, sink.getvalue(), **self.options)


def read_manifest(output: str, **storage_options: Any):
    """The manifest of a prepared corpus as a pandas DataFrame."""
    layout = CorpusLayout(output, storage_options)
    return pq.read_table(io.BytesIO(storage.read_bytes(layout.manifest, **storage_options))).to_pandas()


def read_manifest_rows(layout: CorpusLayout) -> list[dict]:
    """The manifest's rows (only the columns naming windows: path, status, n_windows, commit)."""
    data = storage.read_bytes(layout.manifest, **layout.options)
    table = pq.read_table(io.BytesIO(data), columns=["path", "status", "n_windows", "commit"])
    return table.to_pylist()


def corpus_document(preset: dict, fmt: str, inputs: list[str], rows: list[dict], ignored: list[tuple[str, str]],
                    columns: dict[str, dict]) -> dict:
    """corpus.json: what a training job checks before it starts workers, and what the corpus became."""
    ok = [r for r in rows if r["status"] == "ok"]
    window_s = preset["windows"].get("window_s", 0.0)
    n_windows = sum(r["n_windows"] for r in ok)
    return {
        "version": 1,
        "preset": preset,
        "format": fmt,
        "inputs": inputs,
        "columns": columns,
        "metadata_columns": list(METADATA_COLUMNS),
        "counts": {
            "files": len(rows), "ok": len(ok), "rejected": len(rows) - len(ok), "windows": n_windows,
            "hours": round(sum(r["duration_s"] or 0.0 for r in ok) / 3600, 6),
            "window_hours": round(n_windows * window_s / 3600, 6), "ignored": len(ignored),
        },
        "rejected_reasons": rejected_reasons(rows),
        "report": corpus_report(rows, ignored, window_s),
        "ignored": [{"path": p, "why": why} for p, why in ignored[:200]],
    }


def rejected_reasons(rows: list[dict], details: int = 10) -> dict[str, dict]:
    """Rejections grouped by reason code (most files first), each with what the code means and its
    most frequent reasons verbatim (with a file that shows each)."""
    groups: dict[str, dict] = {}
    for row in rows:
        if row["status"] != "rejected":
            continue
        code = row.get("reason_code") or "unclassified"
        group = groups.setdefault(code, {"files": 0, "meaning": REASON_CODES.get(code, ""), "reasons": {}})
        group["files"] += 1
        entry = group["reasons"].setdefault(row["reason"], {"reason": row["reason"], "files": 0, "example": row["path"]})
        entry["files"] += 1
    for group in groups.values():
        reasons = sorted(group["reasons"].values(), key=lambda e: (-e["files"], e["reason"]))
        group["reasons"] = reasons[:details]
        group["other_reasons"] = len(reasons) - len(group["reasons"])
    return dict(sorted(groups.items(), key=lambda kv: (-kv[1]["files"], kv[0])))


def corpus_report(rows: list[dict], ignored: list[tuple[str, str]], window_s: float, top: int = 200) -> dict:
    """What the corpus turned into: files by status and reason code, hours read vs kept, channels
    seen vs used, sampling rates seen."""
    read = [r for r in rows if (r["duration_s"] or 0) > 0]
    ok = [r for r in rows if r["status"] == "ok"]
    seen: Counter = Counter()
    used: Counter = Counter()
    for row in read:
        seen.update(set(json.loads(row["channels"] or "[]")))
    for row in ok:
        used.update(set(json.loads(row.get("channels_used") or "[]")))
    rates = Counter(f"{r['sfreq']:g}" for r in read if r["sfreq"])
    return {
        "files": {"listed": len(rows), "ok": len(ok), "rejected": len(rows) - len(ok), "ignored": len(ignored),
                  "read": len(read)},
        "rejected_by_code": {code: n for code, n in sorted(Counter(
            r.get("reason_code") or "unclassified" for r in rows if r["status"] == "rejected").items(),
            key=lambda kv: (-kv[1], kv[0]))},
        "hours": {"read": round(sum(r["duration_s"] for r in read) / 3600, 6),
                  "in_ok_files": round(sum(r["duration_s"] or 0.0 for r in ok) / 3600, 6),
                  "kept_in_windows": round(sum(r["n_windows"] for r in ok) * window_s / 3600, 6)},
        "channels": {"seen": len(seen), "used": len(used), "seen_files": dict(seen.most_common(top)),
                     "used_files": dict(used.most_common(top))},
        "rates_hz": dict(sorted(rates.items(), key=lambda kv: (-kv[1], float(kv[0])))[:top]),
    }


def report_lines(report: dict) -> list[str]:
    """The corpus report for a person, a few lines."""
    files, hours, channels = report["files"], report["hours"], report["channels"]
    codes = ", ".join(f"{code} {n}" for code, n in report["rejected_by_code"].items())
    kept = hours["kept_in_windows"] / hours["read"] if hours["read"] else 0.0
    used = ", ".join(f"{name} ({n})" for name, n in list(channels["used_files"].items())[:24])
    seen = ", ".join(f"{name} ({n})" for name, n in list(channels["seen_files"].items())[:12])
    rates = ", ".join(f"{rate} Hz ({n})" for rate, n in list(report["rates_hz"].items())[:12])
    return [
        f"files: {files['listed']} listed, {files['ok']} ok, {files['rejected']} rejected"
        + (f" ({codes})" if codes else "") + f", {files['ignored']} other files ignored",
        f"hours: {hours['read']:.3f} read, {hours['in_ok_files']:.3f} in ok files, "
        f"{hours['kept_in_windows']:.3f} kept in windows ({kept:.0%} of what was read)",
        f"channels: {channels['seen']} distinct seen, {channels['used']} used: {used or '-'}",
        f"channels seen most: {seen or '-'}",
        f"rates seen (files): {rates or '-'}",
    ]
