"""Read any supported file, local or `s3://`, into `Recording`s (one per trial)."""
from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable
from typing import Any

from physiofm.data import storage
from physiofm.data.budget import FileBudget
from physiofm.data.readers.deap_pickle import read_deap
from physiofm.data.readers.edf_files import read_edf
from physiofm.data.readers.matlab_layouts import layout, read_amigos, read_dreamer, read_seed
from physiofm.data.readers.wfdb_records import read_wfdb, signal_files
from physiofm.data.recording import Recording, RecordingRejected, check_signal

FORMATS = ("wfdb", "edf", "bdf", "deap", "seed", "seediv", "dreamer", "amigos")
FORMAT_CHOICES = ("auto", *FORMATS)
# What an extension says; ".mat" files name their dataset through their variables.
EXTENSION_FORMATS = {".hea": "wfdb", ".edf": "edf", ".bdf": "bdf", ".dat": "deap", ".mat": "mat"}
FORMAT_EXTENSIONS = {"wfdb": ".hea", "edf": ".edf", "bdf": ".bdf", "deap": ".dat",
                     "seed": ".mat", "seediv": ".mat", "dreamer": ".mat", "amigos": ".mat"}


def check_format(fmt: str) -> str:
    if fmt not in FORMAT_CHOICES:
        raise ValueError(f"format must be one of {FORMAT_CHOICES}, got {fmt!r}")
    return fmt


def extension(uri: str) -> str:
    return os.path.splitext(uri)[1].lower()


def read_trials(uri: str, fmt: str = "auto", retry_policy: storage.RetryPolicy = storage.RetryPolicy(),
                decode_only: Callable[[list[str]], list[int] | None] | None = None,
                budget: FileBudget | None = None, **storage_options: Any) -> list[Recording]:
    """Every recording in the file at `uri` (a WFDB record is addressed by its `.hea`).

    `decode_only(labels)` may name the only channels worth decoding (EDF/BDF honour it; see
    `Preset.decode_only`). What the file declares is checked against `budget` (default limits when
    None) before it is decoded. Raises `RecordingRejected` with the reason when the file cannot give
    a signal.
    """
    budget = budget or FileBudget()
    kind = EXTENSION_FORMATS.get(extension(uri)) if check_format(fmt) == "auto" else fmt
    if kind is None:
        raise RecordingRejected(
            f"unsupported extension {extension(uri)!r}; supported: {sorted(EXTENSION_FORMATS)} (or pass a format)",
            "unsupported_format")
    stage = _Stager(retry_policy, storage_options)
    if kind == "wfdb":
        return _checked(_read_wfdb(uri, stage, budget), budget)
    with stage([uri]) as (path,):
        _check_not_empty(path)
        if kind == "mat":
            kind = layout(path, budget)
        if kind in ("edf", "bdf"):
            return _checked(read_edf(path, uri, kind, decode_only, budget), budget)
        if kind == "deap":
            return _checked(read_deap(path, uri, budget), budget)
        if kind == "dreamer":
            return _checked(read_dreamer(path, uri, budget), budget)
        if kind == "amigos":
            return _checked(read_amigos(path, uri, budget), budget)
        if kind == "seediv":
            return _checked(read_seed(path, uri, dataset="seediv", budget=budget), budget)
        label_uri = _sibling(uri, "label.mat")
        if not storage.exists(label_uri, **storage_options):
            return _checked(read_seed(path, uri, None, budget=budget), budget)
        with stage([label_uri]) as (label_path,):
            return _checked(read_seed(path, uri, label_path, budget=budget), budget)


def read_recording(uri: str, fmt: str = "auto", **options: Any) -> Recording:
    """The single recording in the file at `uri`; multi-trial files need `read_trials`."""
    trials = read_trials(uri, fmt, **options)
    if len(trials) != 1:
        raise ValueError(f"{uri} holds {len(trials)} trials; use read_trials() for multi-trial files")
    return trials[0]


class _Stager:
    def __init__(self, policy: storage.RetryPolicy, options: dict[str, Any]):
        self.policy, self.options = policy, options

    def __call__(self, uris: list[str]):
        return storage.local_files(uris, self.policy, **self.options)


def _read_wfdb(uri: str, stage: _Stager, budget: FileBudget) -> list[Recording]:
    if extension(uri) != ".hea":
        raise RecordingRejected(f"WFDB signal file {os.path.basename(uri)} is named by no header in its folder "
                                "(is its record's .hea missing?)", "orphan_signal_file")
    uris = _remote_record_files(uri, stage) if storage.is_remote(uri) else [uri]
    with _stage_present(stage, uris) as (header, *_):
        _check_not_empty(header)
        return read_wfdb(header, uri, budget)


def _remote_record_files(uri: str, stage: _Stager) -> list[str]:
    """The header at `uri` and the files it names (segment headers and their signal files too), so
    that the staged copy reads as the record would locally."""
    with stage([uri]) as (header,):
        _check_not_empty(header)
        names = signal_files(header)
    segments = [_sibling(uri, n) for n in names if n.endswith(".hea")]
    files = [_sibling(uri, n) for n in names if not n.endswith(".hea")]
    if segments:
        with _stage_present(stage, segments) as local:
            for path in local:
                files += [_sibling(uri, n) for n in signal_files(path) if not n.endswith(".hea")]
    return [uri, *segments, *sorted(set(files))]


@contextlib.contextmanager
def _stage_present(stage: _Stager, uris: list[str]):
    """Stage `uris`, leaving out those that do not exist (the reader names what is missing)."""
    context = stage(uris)
    try:
        local = context.__enter__()
    except FileNotFoundError:
        context = stage([u for u in uris if storage.exists(u, **stage.options)])
        local = context.__enter__()
    try:
        yield local
    finally:
        context.__exit__(None, None, None)


def _sibling(uri: str, name: str) -> str:
    directory = posixpath.dirname(uri) if storage.is_remote(uri) else os.path.dirname(uri)
    return storage.join(directory, name)


def _check_not_empty(path: str) -> None:
    if os.path.getsize(path) == 0:
        raise RecordingRejected(f"empty file (0 bytes): {os.path.basename(path)}", "empty_file")


def _checked(recordings: list[Recording], budget: FileBudget) -> list[Recording]:
    """The recordings, each with a signal, and together within what the preset's resampling may
    make of them (the budget's bytes per recording, counted at the highest rate they reach)."""
    if not recordings:
        raise RecordingRejected("no signal: the file holds no trials", "no_signal")
    recordings = [check_signal(r) for r in recordings]
    target = budget.target_rate_hz
    peak = sum(r.data.size * 8.0 * max(1.0, (target or r.sfreq) / r.sfreq) for r in recordings)
    budget.check_bytes("decoded recording", 0, peak, f"{len(recordings)} trial(s) at the preset's rate")
    if target:
        for rec in recordings:
            if target / rec.sfreq > budget.max_upsampling:
                raise RecordingRejected(f"resampling {rec.sfreq:.6g} Hz to the preset's {target:g} Hz upsamples "
                                        f"{target / rec.sfreq:.4g} times (limit {budget.max_upsampling:g}; budget "
                                        "max_upsampling)", "sampling_rate")
    return recordings
