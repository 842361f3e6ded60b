"""Ray Data pipeline: list input URIs, read and preprocess them in parallel tasks, write windows
as sharded Parquet, account for every file in the manifest, and resume where a run stopped.

Recordings go through in batches (`files_per_commit`); a batch is one streaming Ray Data
execution ending in `write_parquet`, then a commit file (see `corpus.py`). Re-running skips
committed recordings; a batch whose execution fails (a worker killed by a file) is split in
halves until the culprit stands alone and is rejected with the error text.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np

from physiofm.data import storage
from physiofm.data.corpus import CorpusLayout, corpus_document, report_lines
from physiofm.data.inputs import InputFile, list_inputs  # noqa: F401 - part of this module's interface
from physiofm.data.presets import Preset, get_preset
from physiofm.data.readers import check_format, read_trials
from physiofm.data.recording import Recording, RecordingRejected, error_text
from physiofm.data.windows import Windows

# ---------------------------------------------------------------- one file, in a worker

def window_batch(rec: Recording, windows: Windows) -> dict[str, np.ndarray]:
    """The rows of one recording's windows: tensor columns plus the metadata columns."""
    n = len(windows)
    batch: dict[str, np.ndarray] = dict(windows.tensors)
    for column, mask in windows.masks.items():
        batch[column] = np.repeat(mask[None], n, axis=0)
    text = {"recording": rec.source, "dataset": rec.dataset, "subject": rec.subject, "session": rec.session,
            "trial": rec.trial, "labels": json.dumps(rec.labels, sort_keys=True)}
    batch.update({key: np.array([value] * n, dtype=object) for key, value in text.items()})
    batch["window_index"] = windows.index.astype(np.int64)
    batch["window_start_s"] = windows.start_s.astype(np.float64)
    batch["label"] = np.full(n, rec.label, dtype=np.int64)
    return batch


def column_shapes(windows: Windows) -> dict[str, dict]:
    """Shape and dtype of each tensor column of a window row."""
    columns = {k: {"shape": list(v.shape[1:]), "dtype": "float32"} for k, v in windows.tensors.items()}
    return columns | {k: {"shape": [v.size], "dtype": "bool"} for k, v in windows.masks.items()}


def rejected_row(item: InputFile, reason: str = "", code: str = "") -> dict:
    """A manifest row for `item` that says nothing yet but why it was rejected (`code`: REASON_CODES)."""
    return {"path": item.path, "status": "rejected", "reason": reason, "reason_code": code if reason else "",
            "n_windows": 0, "n_windows_rejected": 0, "format": item.fmt, "dataset": "", "subject": "", "n_trials": 0,
            "duration_s": 0.0, "sfreq": None, "channels": "[]", "channels_used": "[]", "shapes": "{}", "notes": "[]",
            "bytes": item.bytes, "seconds": 0.0, "retryable": False}


def process_file(item: InputFile, preset: Preset, policy: storage.RetryPolicy, options: dict[str, Any],
                 expected_shapes: dict[str, dict] | None = None) -> tuple[list[dict], dict]:
    """(window batches, manifest row) of one input file; never raises for a bad file."""
    started = time.perf_counter()
    row = rejected_row(item)
    batches: list[dict] = []
    notes: list[str] = []
    try:
        trials = read_trials(item.path, item.fmt, policy, preset.decode_only, **options)
        first = trials[0]
        subjects = sorted({t.subject for t in trials})
        duration = first.meta.get("record_duration_s", sum(t.duration_s for t in trials))  # gaps count, as wfdb's
        row.update(format=first.meta.get("format", item.fmt), dataset=first.dataset, n_trials=len(trials),
                   subject=",".join(subjects) if len(subjects) <= 3 else f"{len(subjects)} subjects",
                   duration_s=float(duration), sfreq=first.sfreq, channels=json.dumps(first.meta.get("file_channels", first.ch_names)))
        notes = list(first.meta.get("notes", []))
        shapes, used, rejected = None, [], []  # rejected: (trial label, code, reason)
        for rec in trials:
            label = f"trial {rec.trial}: " if len(trials) > 1 else ""
            try:
                windows = preset(rec)
            except RecordingRejected as error:
                rejected.append((label, error.code, str(error)))
                continue
            notes += [label + note for note in windows.notes if note not in notes and label + note not in notes]
            row["n_windows_rejected"] += windows.n_rejected
            if len(windows) == 0:
                code = "nan_samples" if set(windows.rejections) == {"non-finite"} else "amplitude"
                rejected.append((label, code, f"no window kept: {windows.describe_rejections()}"))
                continue
            shapes = column_shapes(windows)
            if expected_shapes and shapes != expected_shapes:
                rejected.append((label, "shape_mismatch",
                                 f"window shapes {shapes} differ from the corpus's {expected_shapes}"))
                continue
            used += [name for name in windows.channels if name not in used]
            batches.append(window_batch(rec, windows))
        if batches:
            notes += [label + reason for label, _, reason in rejected]
            row.update(status="ok", n_windows=sum(len(b["window_index"]) for b in batches), shapes=json.dumps(shapes),
                       channels_used=json.dumps(used))
        elif len(trials) == 1:
            row.update(reason=rejected[0][2], reason_code=rejected[0][1])
        else:
            codes = Counter(code for _, code, _ in rejected)
            label, code, reason = next(r for r in reversed(rejected) if r[1] == codes.most_common(1)[0][0])
            causes = ", ".join(f"{c} x{n}" for c, n in codes.most_common())
            row.update(reason=f"all {len(trials)} trials rejected ({causes}); {label}{reason}", reason_code=code)
            notes += [label + reason for label, _, reason in rejected[:20]]
    except RecordingRejected as error:
        row.update(reason=str(error), reason_code=error.code)
    except storage.StorageError as error:
        row.update(reason=f"storage: {error}", reason_code="storage", retryable=True)
    except Exception as error:  # noqa: BLE001 - bad input never crashes a run
        frame = traceback.extract_tb(error.__traceback__)[-1]
        row.update(reason=f"unexpected error while processing this file (a bug in physiofm, please report it): "
                          f"{error_text(error)}", reason_code="internal_error")
        notes.append(f"{type(error).__name__} at {os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})")
    row["notes"] = json.dumps(notes)
    row["seconds"] = time.perf_counter() - started
    return batches, row


def _process_batch(batch: dict[str, np.ndarray], *, preset: Preset, policy: storage.RetryPolicy,
                   options: dict[str, Any], expected_shapes, collector, chunk_bytes: int):
    """All files of one block: windows leave in chunks of about `chunk_bytes` (few, large blocks
    for the writer, memory bounded by a chunk plus one recording), rows are reported once."""
    import ray

    rows, pending, pending_bytes = [], [], 0
    for path, fmt, size in zip(batch["path"], batch["fmt"], batch["bytes"]):
        windows, row = process_file(InputFile(str(path), str(fmt), int(size)), preset, policy, options, expected_shapes)
        rows.append(row)
        for window in windows:
            if pending and _shape_key(window) != _shape_key(pending[0]):
                yield _concatenate(pending)  # one chunk never mixes window shapes
                pending, pending_bytes = [], 0
            pending.append(window)
            pending_bytes += sum(v.nbytes for v in window.values())
            if pending_bytes >= chunk_bytes:
                yield _concatenate(pending)
                pending, pending_bytes = [], 0
    ray.get(collector.add.remote(rows))  # before the task ends, so the driver's drain sees them
    if pending:
        yield _concatenate(pending)


def _shape_key(batch: dict[str, np.ndarray]) -> tuple:
    return tuple((name, values.shape[1:]) for name, values in sorted(batch.items()))


def _concatenate(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(batches) == 1:
        return batches[0]
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


class _Collector:
    """Manifest rows reported by the tasks of one batch (a task retried reports again: last wins)."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def add(self, rows: list[dict]) -> None:
        self.rows.update((row["path"], row) for row in rows)

    def drain(self) -> dict[str, dict]:
        rows, self.rows = self.rows, {}
        return rows


# ---------------------------------------------------------------- the run, in the driver

def prepare_corpus(inputs: list[str], output: str, preset: str | Preset = "cbramod-eeg", fmt: str = "auto",
                   overwrite: bool = False, *, preset_options: dict[str, Any] | None = None,
                   files_per_commit: int | None = None, files_per_task: int = 16, shard_mb: float = 128.0,
                   num_cpus: float = 1.0, task_retries: int = 2, storage_options: dict[str, Any] | None = None,
                   retry_policy: storage.RetryPolicy = storage.RetryPolicy(),
                   progress: Callable[[str], None] | None = None,
                   on_commit: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Prepare `inputs` into windows under `output` (see `corpus.py` for the layout); returns the
    summary (files ok/rejected, windows, hours of signal, throughput).

    Re-running on the same output resumes; `overwrite=True` starts again. Uses the running Ray
    cluster, or starts a local one. `on_commit(info)` is called after every committed batch.
    A batch holds `files_per_commit` files (default: 16 per cluster CPU, at least 128); its tasks
    take up to `files_per_task` files each, and at least two tasks per CPU are made. A task
    whose worker dies is retried `task_retries` times before its batch is split. One run per
    output at a time.
    """
    import ray

    started = time.perf_counter()
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    options = dict(storage_options or {})
    preset = get_preset(preset, **(preset_options or {}))
    layout = CorpusLayout(output, options)
    if overwrite:
        layout.reset()
    config = {"preset": preset.to_dict(), "format": check_format(fmt)}
    _check_same_config(layout, config)

    items, ignored = list_inputs(list(inputs), fmt, **options)
    done_rows = {r["path"]: r for r in layout.committed_rows()}
    stale = layout.remove_uncommitted_windows({r["commit"] for r in done_rows.values()})
    if stale:
        say(f"[prepare] removed {len(stale)} window files of an interrupted run")
    todo = [i for i in items if i.path not in done_rows or done_rows[i.path]["retryable"]]
    say(f"[prepare] {len(items)} recordings listed ({len(items) - len(todo)} already done, "
        f"{len(ignored)} other files ignored); preset {preset.name}")
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    files_per_commit = files_per_commit or max(128, 16 * cpus)  # fewer Dataset executions; redo at most this many
    for name, value in (("files_per_commit", files_per_commit), ("files_per_task", files_per_task)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    context = ray.data.DataContext.get_current()
    progress_bars, context.enable_progress_bars = context.enable_progress_bars, False  # our own line instead

    expected = _expected_shapes(done_rows.values())
    collector = ray.remote(num_cpus=0)(_Collector).remote()
    run = _Run(layout, preset, retry_policy, options, collector, num_cpus, task_retries, shard_mb, say, on_commit,
               files_per_task, cpus)
    counts = {"ok": 0, "rejected": 0, "windows": 0, "bytes": 0, "files": 0}
    try:
        for start in range(0, len(todo), files_per_commit):
            for row in run.batch(todo[start:start + files_per_commit], expected):
                counts["files"] += 1
                counts["ok" if row["status"] == "ok" else "rejected"] += 1
                counts["windows"] += row["n_windows"]
                counts["bytes"] += row["bytes"] or 0
                if expected is None and row["status"] == "ok":
                    expected = json.loads(row["shapes"])
            elapsed = time.perf_counter() - started
            say(f"[prepare] {counts['files']}/{len(todo)} files (ok {counts['ok']}, rejected {counts['rejected']}), "
                f"{counts['windows']} windows, {counts['files'] / elapsed:.2f} files/s, "
                f"{counts['bytes'] / 2**20 / elapsed:.1f} MiB/s")
    finally:
        context.enable_progress_bars = progress_bars
        ray.kill(collector)
    return _finish(layout, config, list(inputs), ignored, counts, time.perf_counter() - started, say)


def _check_same_config(layout: CorpusLayout, config: dict) -> None:
    uri = storage.join(layout.progress, "config.json")
    previous = layout.read_json(uri)
    if previous is not None and previous != json.loads(json.dumps(config)):
        raise ValueError(f"{layout.output} holds a corpus prepared with another preset or format "
                         f"({previous['preset']['name']}, {previous['format']}); pass overwrite=True or another output")
    layout.write_json(uri, config)


def _expected_shapes(rows) -> dict[str, dict] | None:
    for row in rows:
        if row["status"] == "ok":
            return json.loads(row["shapes"])
    return None


class _Run:
    def __init__(self, layout, preset, policy, options, collector, num_cpus, task_retries, shard_mb, say, on_commit,
                 files_per_task, cluster_cpus):
        self.layout, self.preset, self.policy, self.options = layout, preset, policy, options
        self.files_per_task, self.cluster_cpus = files_per_task, cluster_cpus
        self.collector, self.num_cpus, self.task_retries = collector, num_cpus, task_retries
        self.shard_bytes, self.say, self.on_commit = int(shard_mb * 2**20), say, on_commit
        self.filesystem, self.windows_path = storage.pyarrow_filesystem(layout.windows, **options)
        self.sequence = 0

    def batch(self, items: list[InputFile], expected) -> list[dict]:
        """Process and commit `items`; on a failed execution, split them until the culprit is alone."""
        import ray
        from ray.data.datasource import FilenameProvider

        self.sequence += 1
        # Commit names sort in time order (the latest row of a path wins) and hold no "_".
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        name = f"{stamp}-{self.sequence:05d}-{secrets.token_hex(3)}"
        tasks = min(len(items), max(math.ceil(len(items) / self.files_per_task), 2 * self.cluster_cpus))
        dataset = ray.data.from_items([{"path": i.path, "fmt": i.fmt, "bytes": i.bytes} for i in items],
                                      override_num_blocks=tasks)
        with warnings.catch_warnings():
            # Ray Data retries a task whose worker died forever (max_retries=-1): a file that kills
            # its worker would hang the run. Only the deprecated remote-args route can bound it.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(
                _process_batch, batch_size=None, num_cpus=self.num_cpus, max_retries=self.task_retries,
                fn_kwargs={"preset": self.preset, "policy": self.policy, "options": self.options,
                           "expected_shapes": expected, "collector": self.collector,
                           "chunk_bytes": min(self.shard_bytes, 64 * 2**20)},
            )
        try:
            dataset.write_parquet(self.windows_path, filesystem=self.filesystem, min_bytes_per_file=self.shard_bytes,
                                  filename_provider=FilenameProvider(dataset_uuid=name, file_format="parquet"))
        except Exception as error:  # noqa: BLE001 - a worker died or a task failed for good
            ray.get(self.collector.drain.remote())
            self.layout.remove_uncommitted_windows(set(self._committed_names()))
            if len(items) == 1:
                text = str(error).strip().splitlines()[-1][:500] if str(error).strip() else "no message"
                text = re.sub(r"^(?:[\w.]+\.)?\w+(?:Error|Exception): ", "", text)  # Ray's class names say nothing more
                rows = [rejected_row(items[0], f"worker failed on this file: {text}", "worker_failed")]
            else:
                self.say(f"[prepare] a batch of {len(items)} failed ({type(error).__name__}); splitting it")
                half = len(items) // 2
                return self.batch(items[:half], expected) + self.batch(items[half:], expected)
        else:
            reported = ray.get(self.collector.drain.remote())
            rows = [reported.get(i.path) or rejected_row(i, "no report from its task", "no_report") for i in items]
        self.layout.commit(name, rows)
        if self.on_commit:
            self.on_commit({"commit": name, "paths": [r["path"] for r in rows]})
        return rows

    def _committed_names(self) -> list[str]:
        return sorted({row["commit"] for row in self.layout.committed_rows()})


def _finish(layout: CorpusLayout, config: dict, inputs: list[str], ignored, counts: dict, elapsed: float, say) -> dict:
    rows = layout.committed_rows()
    layout.write_manifest(rows)
    shapes = sorted({r["shapes"] for r in rows if r["status"] == "ok"})
    if len(shapes) > 1:  # only the first batch can mix them; later ones reject what differs
        raise ValueError(f"recordings of {layout.output} give different window shapes {shapes}: one corpus needs "
                         "one shape per column; prepare these datasets into separate outputs")
    columns = json.loads(shapes[0]) if shapes else {}
    document = corpus_document(config["preset"], config["format"], inputs, rows, ignored, columns)
    layout.write_json(layout.corpus_json, document)
    total = document["counts"]
    summary = {**total, "output": layout.output, "processed_now": counts["files"],
               "skipped": total["files"] - counts["files"], "seconds": round(elapsed, 3),
               "files_per_s": round(counts["files"] / elapsed, 3) if elapsed else 0.0,
               "windows_per_s": round(counts["windows"] / elapsed, 3) if elapsed else 0.0,
               "mib_per_s": round(counts["bytes"] / 2**20 / elapsed, 3) if elapsed else 0.0,
               "rejected_reasons": document["rejected_reasons"]}
    say(f"[prepare] done: {total['ok']} ok, {total['rejected']} rejected, {total['windows']} windows, "
        f"{total['hours']:.3f} h of signal; this run {counts['files']} files in {elapsed:.1f} s "
        f"({summary['files_per_s']} files/s, {summary['windows_per_s']} windows/s, {summary['mib_per_s']} MiB/s)")
    for line in report_lines(document["report"]):
        say(f"[prepare] {line}")
    summary["report"] = document["report"]
    return summary

