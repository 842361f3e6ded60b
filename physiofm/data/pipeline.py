"""Ray Data pipeline: list input URIs, read and preprocess them in parallel, write windows as
sharded Parquet, account for every file in the manifest, and resume where a run stopped.

One streaming Ray Data execution runs groups of files through a pool of workers (actors, one per
CPU, fewer for a small input; libraries imported once); each task writes its windows into its own
shards (`shards.py`) and returns the files' manifest rows, which the driver commits as they arrive
(see `corpus.py`): no barrier between commits. Re-running skips committed recordings; a file that
kills its worker is isolated among the files in flight and rejected with the error text.

Ray Data's own checkpointing (`DataContext.checkpoint_config`, beta in Ray 2.60) was evaluated and
not used: it filters rows of a Read operator by an id column that every output row carries and
commits per written block, so a file whose windows span two blocks can be half committed and then
skipped, a file with no window (a rejection) is never recorded, and the manifest, which accounts
for every file, is outside its scope.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import re
import secrets
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from physiofm.data import storage
from physiofm.data.budget import MIB, FileBudget
from physiofm.data.corpus import MANIFEST_SCHEMA, CorpusLayout, corpus_document, report_lines
from physiofm.data.inputs import InputFile, check_inputs, list_inputs  # noqa: F401 - part of this module's interface
from physiofm.data.limits import FileGuard, FileLimitExceeded
from physiofm.data.output import check_no_overlap, OutputLock
from physiofm.data.presets import Preset, get_preset
from physiofm.data.tracker import Tracker
from physiofm.data.readers import check_format, read_trials
from physiofm.data.recording import Recording, RecordingRejected, error_text
from physiofm.data.shards import ShardWriter, new_prefix
from physiofm.data.windows import Windows

COMMIT_EVERY_S = 30.0  # the driver commits at least this often while rows arrive

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


MAX_NOTES = 40  # notes kept per manifest row (each cut to the budget's max_reason_chars)


def process_file(item: InputFile, preset: Preset, policy: storage.RetryPolicy, options: dict[str, Any],
                 expected_shapes: dict[str, dict] | None = None, budget: FileBudget | None = None,
                 guard: FileGuard | None = None) -> tuple[list[dict], dict]:
    """(window batches, manifest row) of one input file; never raises for a bad file.

    What the file declares is checked against `budget` (default limits when None) before it is
    decoded; `guard` (a pipeline worker's) stops it past the time and memory limits. Reasons and
    notes are cut to the budget's `max_reason_chars`."""
    budget = (budget or FileBudget()).for_preset(preset.target_rate)
    started = time.perf_counter()
    try:
        with guard.watch(item.path) if guard is not None else contextlib.nullcontext():
            batches, row, notes = _process(item, preset, policy, options, expected_shapes, budget)
    except FileLimitExceeded as limit:
        batches, row, notes = [], rejected_row(item, limit.reason, limit.code), []
    row["reason"] = budget.cap(row["reason"])
    row["notes"] = json.dumps([budget.cap(note) for note in notes[:MAX_NOTES]]
                              + ([f"... {len(notes) - MAX_NOTES} more notes"] if len(notes) > MAX_NOTES else []))
    row["seconds"] = time.perf_counter() - started
    return batches, row


def _process(item: InputFile, preset: Preset, policy: storage.RetryPolicy, options: dict[str, Any],
             expected_shapes: dict[str, dict] | None, budget: FileBudget) -> tuple[list[dict], dict, list[str]]:
    row = rejected_row(item)
    batches: list[dict] = []
    notes: list[str] = []
    try:
        trials = read_trials(item.path, item.fmt, policy, preset.decode_only, budget, **options)
        first = trials[0]
        subjects = sorted({t.subject for t in trials})
        duration = first.meta.get("record_duration_s", sum(t.duration_s for t in trials))  # gaps count, as wfdb's
        row.update(format=first.meta.get("format", item.fmt), dataset=first.dataset, n_trials=len(trials),
                   subject=",".join(subjects) if len(subjects) <= 3 else f"{len(subjects)} subjects",
                   duration_s=float(duration), sfreq=first.sfreq,
                   channels=json.dumps(first.meta.get("file_channels", first.ch_names)))
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
    except MemoryError as error:
        row.update(reason=f"the file needs more memory than is available: {error_text(error)}", reason_code="too_large")
    except Exception as error:  # noqa: BLE001 - bad input never crashes a run
        if isinstance(error, OSError) and storage.is_storage_error(error):
            # Denied, full, throttled, gone: the storage's fault, not the recording's. Tried again next run.
            row.update(reason=f"storage: reading {os.path.basename(item.path)}: {storage.describe(error)}",
                       reason_code="storage", retryable=True)
            return batches, row, notes
        frame = traceback.extract_tb(error.__traceback__)[-1]
        row.update(reason=f"unexpected error while processing this file (a bug in physiofm, please report it): "
                          f"{error_text(error)}", reason_code="internal_error")
        notes.append(f"{type(error).__name__} at {os.path.basename(frame.filename)}:{frame.lineno} ({frame.name})")
    return batches, row, notes


OUTPUT_ERROR = "physiofm cannot write the output"  # marks a worker's output-storage failure in Ray's error text


class OutputStorageError(storage.StorageError):
    """Writing the run's own output failed (disk full, permission, throttled beyond retries): the
    run stops, naming it; no recording is blamed, and running again resumes."""


# A worker's start costs ~3 s of CPU (Python, Ray, the readers' imports), more than the ~1.5 s that
# 16 MiB of files take to preprocess (ECG records ~10 ms per 120 KB, EEG ~75 ms per 1.7 MB): a small
# input gets fewer workers than the cluster could hold, each taking a larger share.
INPUT_MIB_PER_WORKER = 16


def workers_for(items: list[InputFile]) -> int:
    """The most workers worth starting for `items`: one per INPUT_MIB_PER_WORKER of input, at least one."""
    return max(1, math.ceil(sum(i.bytes for i in items) / (INPUT_MIB_PER_WORKER * MIB)))


class _FileWorker:
    """A pipeline worker (a Ray actor, one per CPU, fewer for a small input): imports the readers
    once, then runs task after task. A task is a group of files; their windows go to the task's own
    shards, their manifest rows are the task's output (the driver commits them). A `FileGuard` holds
    each file to the budget's time limit and the worker's memory limit."""

    def __init__(self, preset: Preset, policy: storage.RetryPolicy, options: dict[str, Any], expected_shapes,
                 tracker, windows_uri: str, shard_bytes: int, chunk_bytes: int, execution: str = "",
                 budget: FileBudget | None = None, memory_bytes: int | None = None):
        self.preset, self.policy, self.options, self.expected = preset, policy, options, expected_shapes
        self.tracker, self.shard_bytes, self.chunk_bytes = tracker, shard_bytes, chunk_bytes
        self.execution, self.budget = execution or new_prefix(), budget or FileBudget()
        self.filesystem, self.directory = storage.pyarrow_filesystem(windows_uri, **options)
        self.guard = FileGuard(self.budget.seconds_per_file, memory_bytes, on_hard_stop=self._stopped)
        preset.prepare()  # imports and filter designs belong to the worker's start, not to its first file

    def _stopped(self, path: str, reason: str, code: str) -> None:
        """The guard is about to end this process over `path`: tell the driver which file it was."""
        import ray

        ray.get(self.tracker.stopped.remote(path, reason, code), timeout=10)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa
        import ray

        items = [InputFile(**item) for group in batch["group"] for item in json.loads(group)]
        ray.get(self.tracker.started.remote([item.path for item in items], time.time()))
        prefix = f"{self.execution}-{secrets.token_hex(4)}"  # new for every attempt, named by its execution
        shards = ShardWriter(self.filesystem, self.directory, prefix, self.shard_bytes, self.chunk_bytes)
        rows = []
        try:
            for item in items:
                windows, row = process_file(item, self.preset, self.policy, self.options, self.expected,
                                            self.budget, self.guard)
                for window in windows:
                    shards.add(window)
                rows.append({**row, "commit": prefix})
            shards.close()  # durable before the rows leave: a row out means its windows are written
        except OSError as error:
            if not storage.is_storage_error(error):
                raise
            shards.abandon()
            raise OutputStorageError(f"{OUTPUT_ERROR}: writing window shards under {self.directory}: "
                                     f"{storage.describe(error)}") from None
        return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


# ---------------------------------------------------------------- the run, in the driver

def prepare_corpus(inputs: list[str], output: str, preset: str | Preset = "cbramod-eeg", fmt: str = "auto",
                   overwrite: bool = False, *, preset_options: dict[str, Any] | None = None,
                   files_per_commit: int | None = None, files_per_task: int | None = None, task_mb: float = 64.0,
                   shard_mb: float = 128.0, num_cpus: float = 1.0, task_retries: int = 2,
                   storage_options: dict[str, Any] | None = None,
                   retry_policy: storage.RetryPolicy = storage.RetryPolicy(), dashboard: bool = False,
                   budget: FileBudget | dict[str, Any] | None = None, worker_memory_mib: float | None = None,
                   progress: Callable[[str], None] | None = None,
                   on_commit: Callable[[dict], None] | None = None,
                   connect: Callable[[], None] | None = None,
                   plan_cpus: Callable[[], float] | None = None) -> dict[str, Any]:
    """Prepare `inputs` into windows under `output` (see `corpus.py` for the layout); returns the
    summary (files ok/rejected, windows, hours of signal, throughput, fixed costs apart).

    Re-running on the same output resumes; `overwrite=True` starts again. Uses the running Ray
    cluster, or `connect()` when given, or starts a local one (without the dashboard unless
    `dashboard=True`), and only when a recording is left to do.

    One streaming execution: a pool of workers, one per `num_cpus` of the cluster (or of the CPUs
    `plan_cpus()` gives once Ray is up: what an autoscaler can add, so that it adds them) but no more
    than one per `INPUT_MIB_PER_WORKER` MiB of input (a worker's start outweighs less), each importing
    the readers once, takes tasks of about `task_mb` MiB of input (at most `files_per_task` files,
    at least four tasks per worker) and writes their windows into its own shards of about
    `shard_mb`; the driver commits the manifest rows as tasks finish, every `files_per_commit`
    files (default: 16 per cluster CPU, at least 128; a killed run redoes at most these) or 30 s,
    and `on_commit(info)` is called after each commit. When a worker dies, the files in flight are
    retried one per task; a file that kills its worker alone `task_retries` + 1 times is rejected.

    Each file is held to `budget` (`FileBudget` or its fields as a dict: bytes per recording,
    upsampling, plausible rates, seconds per file), checked before it is decoded, and each worker to
    `worker_memory_mib` (default: the cluster's memory per CPU it holds): a file past it is rejected
    as `too_large`, the rest of its task committed. One run per output at a time (a second fails
    fast); an output inside an input, or holding files physiofm did not write, is refused; only the
    pipeline's own files are ever removed. A storage error writing the output stops the run, naming
    it (no recording is blamed); running again resumes.
    """
    options = dict(storage_options or {})
    preset = get_preset(preset, **(preset_options or {}))
    budget = budget if isinstance(budget, FileBudget) else FileBudget.from_dict(budget)
    for name, value in (("files_per_commit", files_per_commit), ("files_per_task", files_per_task),
                        ("task_mb", task_mb), ("shard_mb", shard_mb), ("num_cpus", num_cpus),
                        ("worker_memory_mib", worker_memory_mib)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    layout = CorpusLayout(output, options)
    check_no_overlap(list(inputs), layout.output)
    layout.check_ours()
    listed = check_inputs(list(inputs), fmt, **options)  # nothing to read fails here, before the output exists
    lock = OutputLock(layout.progress, options)
    lock.acquire()  # a second run on this output stops here
    try:
        return _prepare(list(inputs), layout, preset, fmt, overwrite, files_per_commit=files_per_commit,
                        files_per_task=files_per_task, task_mb=task_mb, shard_mb=shard_mb, num_cpus=num_cpus,
                        task_retries=task_retries, options=options, retry_policy=retry_policy, dashboard=dashboard,
                        budget=budget, worker_memory_mib=worker_memory_mib, progress=progress, on_commit=on_commit,
                        listed=listed, connect=connect, plan_cpus=plan_cpus)
    finally:
        lock.release()


def _prepare(inputs: list[str], layout: CorpusLayout, preset: Preset, fmt: str, overwrite: bool, *,
             files_per_commit, files_per_task, task_mb, shard_mb, num_cpus, task_retries, options, retry_policy,
             dashboard, budget: FileBudget, worker_memory_mib, progress, on_commit, listed,
             connect, plan_cpus=None) -> dict[str, Any]:
    import ray

    started = time.perf_counter()
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    if overwrite:
        layout.reset()
    layout.remove_temporary_files()
    config = {"preset": preset.to_dict(), "format": check_format(fmt)}
    _check_same_config(layout, config)

    items, ignored = listed
    done_rows = {r["path"]: r for r in layout.committed_rows()}
    for uri, why in layout.set_aside:
        say(f"[prepare] commit file {uri} is damaged ({why}): set aside as {posixpath.basename(uri)}.corrupt; "
            "the recordings it held are done again")
    committed = {r["commit"] for r in done_rows.values()}
    stale = layout.remove_uncommitted_windows(committed)
    if stale:
        say(f"[prepare] removed {len(stale)} window files of an interrupted run")
    foreign = layout.foreign_files(committed)
    if foreign:
        say(f"[prepare] {len(foreign)} files under {layout.windows} were not written by this pipeline "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}): left in place, never read")
    todo = [i for i in items if i.path not in done_rows or done_rows[i.path]["retryable"]]
    say(f"[prepare] {len(items)} recordings listed ({len(items) - len(todo)} already done, "
        f"{len(ignored)} other files ignored); preset {preset.name}")
    if not todo:  # every recording is committed already: nothing for a cluster to do
        counts = {"ok": 0, "rejected": 0, "windows": 0, "bytes": 0, "files": 0}
        costs = {"ray_start_s": 0.0, "workers_start_s": 0.0, "processing_s": 0.0}
        return _finish(layout, config, list(inputs), ignored, counts, time.perf_counter() - started, costs, say)
    ray_started = time.perf_counter()
    if connect is not None:
        connect()
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"
        local = {"include_dashboard": dashboard} if address == "local" else {}
        ray.init(address=address, log_to_driver=False, **local)
    ray_start_s = time.perf_counter() - ray_started
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 1.0))
    pool_cpus = (plan_cpus() if plan_cpus else 0.0) or cpus  # an autoscaling cluster plans for more CPUs
    files_per_commit = int(files_per_commit or max(128, 16 * cpus))
    memory_bytes = int(worker_memory_mib * MIB) if worker_memory_mib else max(
        1 << 30, int(float(resources.get("memory", 0.0)) * num_cpus / max(cpus, 1.0)))
    context = ray.data.DataContext.get_current()
    progress_bars, context.enable_progress_bars = context.enable_progress_bars, False  # our own line instead

    counts = {"ok": 0, "rejected": 0, "windows": 0, "bytes": 0, "files": 0}
    run = _Run(layout, preset, retry_policy, options, _expected_shapes(done_rows.values()),
               pool=max(1, int(pool_cpus // num_cpus)), num_cpus=num_cpus, task_retries=task_retries, shard_mb=shard_mb,
               files_per_commit=files_per_commit, files_per_task=files_per_task, task_mb=task_mb, say=say,
               on_commit=on_commit, counts=counts, total=len(todo), budget=budget, memory_bytes=memory_bytes)
    stream_started = time.time()
    try:
        run.process(todo)
    finally:
        context.enable_progress_bars = progress_bars
        run.close()
    costs = {"ray_start_s": ray_start_s, "workers_start_s": (run.first_task_at or stream_started) - stream_started,
             "processing_s": (run.last_result_at or stream_started) - (run.first_task_at or stream_started)}
    try:
        return _finish(layout, config, inputs, ignored, counts, time.perf_counter() - started, costs, say)
    except OSError as error:
        if not storage.is_storage_error(error) or isinstance(error, OutputStorageError):
            raise
        raise OutputStorageError(_stopped_on_storage(f"{OUTPUT_ERROR}: writing the manifest or corpus.json of "
                                                     f"{layout.output}: {storage.describe(error)}")) from None


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


class _ExecutionFailed(Exception):
    pass


class _Run:
    """The driver side of one run: streams groups of files through the worker pool in one Ray
    Data execution, commits the rows as they arrive, and isolates files that kill their worker."""

    def __init__(self, layout: CorpusLayout, preset: Preset, policy, options, expected, *, pool: int, num_cpus: float,
                 task_retries: int, shard_mb: float, files_per_commit: int, files_per_task: int | None,
                 task_mb: float, say, on_commit, counts: dict, total: int, budget: FileBudget | None = None,
                 memory_bytes: int | None = None):
        import ray

        self.layout, self.preset, self.policy, self.options, self.expected = layout, preset, policy, options, expected
        self.budget, self.memory_bytes = budget or FileBudget(), memory_bytes
        self.pool, self.num_cpus, self.task_retries = pool, num_cpus, task_retries
        self.shard_bytes, self.task_bytes = int(shard_mb * 2**20), int(task_mb * 2**20)
        self.files_per_commit, self.files_per_task = files_per_commit, files_per_task
        self.say, self.on_commit, self.counts, self.total = say, on_commit, counts, total
        self.tracker = ray.remote(num_cpus=0)(Tracker).remote()
        self.cpus_free_before = float(ray.available_resources().get("CPU", 0.0))
        self.done: set[str] = set()
        self.failures: dict[str, int] = {}  # executions a file failed alone
        self.sequence = 0
        self.started = time.perf_counter()
        self.first_task_at: float | None = None  # wall clock (time.time) of the first task's start
        self.last_result_at: float | None = None

    def close(self, release_wait_s: float = 10.0) -> None:
        """Stop the tracker, and return once the pool's CPUs are free again (as before the run): Ray Data
        stops its actors asynchronously, and the next dataset this driver runs (a training run's corpus
        read, right after preparing it) would otherwise find no free CPU and warn that it may hang."""
        import ray

        ray.kill(self.tracker)
        deadline = time.monotonic() + release_wait_s
        while (float(ray.available_resources().get("CPU", 0.0)) < self.cpus_free_before
               and time.monotonic() < deadline):
            time.sleep(0.05)

    def process(self, items: list[InputFile], per_task: int | None = None) -> None:
        """Process and commit `items`. When a worker dies, the files it was working on are retried
        one per task until the file that kills its worker has failed alone `task_retries` + 1
        times; it is then rejected, every other file committed."""
        pending = items
        while pending:
            try:
                self._stream(pending, per_task)
                return
            except _ExecutionFailed as failure:
                text, (started, _, stopped) = failure.args
                left = [i for i in pending if i.path not in self.done]
                culprits = [i for i in left if i.path in stopped]
                if culprits:  # a worker's guard ended it over these files: they are the cause, no retry
                    self._commit([{**rejected_row(i, self.budget.cap(stopped[i.path][0]), stopped[i.path][1]),
                                   "commit": ""} for i in culprits])
                    self.say(f"[prepare] a worker was stopped over {len(culprits)} file(s) "
                             f"({stopped[culprits[0].path][0][:160]}): rejected; the others go on")
                    pending = [i for i in left if i.path not in stopped]
                    continue
                if not left:
                    return
                if len(left) == 1:  # it failed alone
                    item = left[0]
                    self.failures[item.path] = self.failures.get(item.path, 0) + 1
                    if self.failures[item.path] > self.task_retries:
                        if re.search(r"out of memory|OutOfMemory|memory monitor", text, re.IGNORECASE):
                            row = rejected_row(item, self.budget.cap(f"the worker ran out of memory on this file "
                                                                     f"(stopped by Ray): {text}"), "too_large")
                        else:
                            row = rejected_row(item, self.budget.cap(f"worker failed on this file: {text}"),
                                               "worker_failed")
                        self._commit([{**row, "commit": ""}])
                        return
                    continue
                suspects = [i for i in left if i.path in started] or left
                self.say(f"[prepare] a worker failed ({text[:200]}); retrying the {len(suspects)} files it and "
                         f"the other workers were on, one per task")
                if per_task == 1 and len(suspects) == len(left):
                    for item in suspects:  # the files in flight failed together: each alone
                        self.process([item], per_task=1)
                    return
                self.process(suspects, per_task=1)
                pending = [i for i in left if i.path not in {s.path for s in suspects}]

    def _groups(self, items: list[InputFile], per_task: int | None) -> list[list[InputFile]]:
        """Contiguous groups of about `task_bytes` of input (at least 4 per worker, for balance),
        never more files than a commit or `files_per_task` holds."""
        most = min(per_task or self.files_per_task or self.files_per_commit, self.files_per_commit)
        total = sum(i.bytes for i in items)
        target = min(self.task_bytes, max(1, total // max(1, min(len(items), 4 * self.pool))))
        groups, group, size = [], [], 0
        for item in items:
            if group and (size + item.bytes > target or len(group) >= most):
                groups.append(group)
                group, size = [], 0
            group.append(item)
            size += item.bytes
        return groups + [group] if group else groups

    def _stream(self, items: list[InputFile], per_task: int | None) -> None:
        import ray

        groups = self._groups(items, per_task)
        workers = min(self.pool, len(groups), workers_for(items))
        ray.get(self.tracker.reset.remote())
        execution = new_prefix()
        self.layout.record_execution(execution)  # before any shard of it exists: its files are ours to remove
        dataset = ray.data.from_items([{"group": json.dumps([vars(i) for i in g])} for g in groups],
                                      override_num_blocks=len(groups))
        with warnings.catch_warnings():
            # Ray Data restarts a dead pool worker and retries its task forever by default: a file that
            # kills its worker would hang the run (and a restarted worker can outlive its execution).
            # A dead worker ends the execution instead (`process` retries); only the deprecated
            # remote-args route can say so.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(
                _FileWorker, batch_size=None, num_cpus=self.num_cpus,
                compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
                max_restarts=0,
                fn_constructor_kwargs={"preset": self.preset, "policy": self.policy, "options": self.options,
                                       "expected_shapes": self.expected, "tracker": self.tracker,
                                       "windows_uri": self.layout.windows, "shard_bytes": self.shard_bytes,
                                       "chunk_bytes": min(self.shard_bytes, 64 * 2**20), "execution": execution,
                                       "budget": self.budget, "memory_bytes": self.memory_bytes})
        received: list[dict] = []
        last_commit = time.perf_counter()
        batches = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            while True:
                try:
                    table = next(batches)
                except StopIteration:
                    break
                except Exception as error:  # noqa: BLE001 - a worker died for good, or the execution broke
                    self._commit(received)  # their windows are written: keep them
                    output_error = next((line for line in str(error).splitlines() if OUTPUT_ERROR in line), None)
                    if output_error:  # the storage, not a file: stop and say so
                        raise OutputStorageError(_stopped_on_storage(output_error[output_error.index(OUTPUT_ERROR):]))
                    state = ray.get(self.tracker.reset.remote())
                    self._note_first_start(state[1])
                    text = str(error).strip().splitlines()[-1][:500] if str(error).strip() else "no message"
                    text = re.sub(r"^(?:[\w.]+\.)?\w+(?:Error|Exception): ", "", text)  # Ray's class names say nothing
                    raise _ExecutionFailed(text, state) from error
                received.extend(table.to_pylist())
                self.last_result_at = time.time()
                if len(received) >= self.files_per_commit or time.perf_counter() - last_commit > COMMIT_EVERY_S:
                    self._commit(received)
                    received, last_commit = [], time.perf_counter()
        finally:
            getattr(batches, "close", lambda: None)()  # on any exit, the execution (and its workers) ends here
        self._commit(received)
        self._note_first_start(ray.get(self.tracker.reset.remote())[1])

    def _note_first_start(self, when: float | None) -> None:
        if when is not None and self.first_task_at is None:
            self.first_task_at = when

    def _commit(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.sequence += 1
        # Commit names sort in time order (the latest row of a path wins) and hold no "_".
        name = f"{new_prefix()}-{self.sequence:05d}"
        try:
            self.layout.commit(name, rows)
        except OSError as error:
            if not storage.is_storage_error(error):
                raise
            raise OutputStorageError(_stopped_on_storage(
                f"{OUTPUT_ERROR}: writing commit {name} under {self.layout.progress}: {storage.describe(error)}")) from None
        self.done.update(row["path"] for row in rows)
        counts = self.counts
        for row in rows:
            counts["files"] += 1
            counts["ok" if row["status"] == "ok" else "rejected"] += 1
            counts["windows"] += row["n_windows"]
            counts["bytes"] += row["bytes"] or 0
        elapsed = time.perf_counter() - self.started
        self.say(f"[prepare] {counts['files']}/{self.total} files (ok {counts['ok']}, rejected {counts['rejected']}), "
                 f"{counts['windows']} windows, {counts['files'] / elapsed:.2f} files/s, "
                 f"{counts['bytes'] / 2**20 / elapsed:.1f} MiB/s")
        if self.on_commit:
            self.on_commit({"commit": name, "paths": [r["path"] for r in rows],
                            "prefixes": sorted({r["commit"] for r in rows}), "windows": sum(r["n_windows"] for r in rows)})


def _stopped_on_storage(what: str) -> str:
    return (f"{what}. The run stopped: no recording was blamed, what was committed stays; free space (or fix "
            "access) and run the same command again to resume")


def _finish(layout: CorpusLayout, config: dict, inputs: list[str], ignored, counts: dict, elapsed: float,
            costs: dict, say) -> dict:
    rows = layout.committed_rows()
    layout.remove_uncommitted_windows({r["commit"] for r in rows})  # attempts retried or cut short
    layout.write_manifest(rows)
    shapes = sorted({r["shapes"] for r in rows if r["status"] == "ok"})
    if len(shapes) > 1:  # only a fresh run can mix them; a resumed one rejects what differs
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
               # fixed costs apart: starting Ray and the workers (imports), then the processing itself
               **{k: round(v, 3) for k, v in costs.items()},
               "processing_files_per_s": round(counts["files"] / costs["processing_s"], 3)
               if costs["processing_s"] > 0 else 0.0,
               "rejected_reasons": document["rejected_reasons"]}
    say(f"[prepare] done: {total['ok']} ok, {total['rejected']} rejected, {total['windows']} windows, "
        f"{total['hours']:.3f} h of signal; this run {counts['files']} files in {elapsed:.1f} s "
        f"({summary['files_per_s']} files/s, {summary['windows_per_s']} windows/s, {summary['mib_per_s']} MiB/s; "
        f"fixed costs: Ray {costs['ray_start_s']:.1f} s, workers {costs['workers_start_s']:.1f} s)")
    for line in report_lines(document["report"]):
        say(f"[prepare] {line}")
    summary["report"] = document["report"]
    return summary

