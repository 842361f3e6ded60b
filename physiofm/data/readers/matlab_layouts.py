"""The emotion datasets' MATLAB layouts (SEED, SEED-IV, DREAMER, AMIGOS) through scipy.io."""
from __future__ import annotations

import functools
import math
import re
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.io

from physiofm.data.budget import MIB, DeclaredSignal, FileBudget, mib, short
from physiofm.data.channels import EMOTIV_14, SEED_62
from physiofm.data.readers.resampling import resample_marking_invalid
from physiofm.data.recording import Recording, RecordingRejected, error_text

SEED_SFREQ = 200.0
SEED_CLASSES = {-1: 0, 0: 1, 1: 2}  # negative, neutral, positive → class index
# SEED-IV ReadMe: the film clips' labels per session (0 neutral, 1 sad, 2 fear, 3 happy).
SEED_IV_LABELS = {
    "1": (1, 2, 3, 0, 2, 0, 0, 1, 0, 1, 2, 1, 1, 1, 2, 3, 2, 2, 3, 3, 0, 3, 0, 3),
    "2": (2, 1, 3, 0, 0, 2, 0, 2, 3, 3, 2, 3, 2, 0, 1, 1, 2, 1, 0, 3, 0, 1, 3, 1),
    "3": (1, 2, 2, 1, 3, 3, 3, 1, 1, 2, 1, 0, 2, 3, 3, 0, 2, 3, 0, 0, 2, 0, 1, 0),
}
AMIGOS_SFREQ = 128.0
AMIGOS_CHANNELS = (*EMOTIV_14, "ECG Right", "ECG Left", "GSR")
AMIGOS_TYPES = ("eeg",) * 14 + ("ecg", "ecg", "gsr")
AMIGOS_UNITS = ("uV",) * 14 + ("NU", "NU", "NU")
AMIGOS_RATINGS = ("arousal", "valence", "dominance", "liking", "familiarity", "neutral", "disgust",
                  "happiness", "surprise", "anger", "fear", "sadness")
_TRIAL_KEY = re.compile(r"_eeg(\d+)$")


_MI_COMPRESSED = 15  # MATLAB 5 data type of a zlib-compressed element
_CHUNK = 1 << 20


def decompressed_bytes(path: str, limit: int) -> int:
    """Bytes the compressed elements of a MATLAB 5 file inflate to, counted by decompressing them
    in chunks and discarding the output; stops (returning a count > `limit`) as soon as `limit`
    is passed. Files of other versions (v4, v7.3/HDF5) have no such elements: 0."""
    total = 0
    with open(path, "rb") as handle:
        header = handle.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return 0
        order = "<" if header[126:128] == b"IM" else ">"
        while True:
            tag = handle.read(8)
            if len(tag) < 8:
                return total
            kind, size = struct.unpack(order + "II", tag)
            if kind >> 16:  # small data element: type, size and data in these 8 bytes
                continue
            if kind != _MI_COMPRESSED:
                handle.seek(size + (-size % 8), 1)
                continue
            inflater, left = zlib.decompressobj(), size
            while left > 0:
                chunk = handle.read(min(left, _CHUNK))
                if not chunk:
                    return total  # truncated: scipy says so
                left -= len(chunk)
                try:
                    total += len(inflater.decompress(chunk, _CHUNK))
                    while inflater.unconsumed_tail and total <= limit:
                        total += len(inflater.decompress(inflater.unconsumed_tail, _CHUNK))
                except zlib.error:
                    return total  # corrupt: scipy says so
                if total > limit:
                    return total


@functools.lru_cache(maxsize=64)
def _inflated(path: str, size: int, mtime_ns: int, limit: int) -> int:
    """`decompressed_bytes` once per file state: the layout check and the reader's load share it."""
    return decompressed_bytes(path, limit)


def check_decompression(path: str, budget: FileBudget) -> None:
    """Reject a .mat whose compressed variables inflate beyond the budget (per recording, and
    relative to the file's size) before scipy allocates them, or lists them: scipy inflates 128 KB
    of compressed data per read, 128 MB of a bomb's, even for a variable's header."""
    stat = Path(path).stat()
    size = stat.st_size
    limit = min(budget.max_recording_bytes, max(16 * MIB, int(budget.max_expansion * size)))
    if _inflated(str(path), size, stat.st_mtime_ns, limit) > limit:
        raise RecordingRejected(
            f"MATLAB file {Path(path).name}: its compressed variables inflate to more than {mib(limit)} from "
            f"{mib(size)} on disk (limits: budget max_recording_mib, max_expansion {budget.max_expansion:g}x)",
            "too_large")


def load(path: str, budget: FileBudget | None = None, **kwargs) -> dict:
    check_decompression(path, budget or FileBudget())
    try:
        return scipy.io.loadmat(path, **kwargs)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - truncated/corrupt/v7.3 files fail in many ways
        raise RecordingRejected(f"not a readable MATLAB file: {error_text(error)}", "unreadable")


def layout(path: str, budget: FileBudget | None = None) -> str:
    """Which dataset wrote this .mat file, from its variable names alone."""
    check_decompression(path, budget or FileBudget())
    try:
        names = [name for name, _, _ in scipy.io.whosmat(path)]
    except Exception as error:  # noqa: BLE001
        raise RecordingRejected(f"not a readable MATLAB file: {error_text(error)}", "unreadable")
    if "DREAMER" in names:
        return "dreamer"
    if "joined_data" in names:
        return "amigos"
    trials = [name for name in names if _TRIAL_KEY.search(name)]
    if len(trials) == 24:
        return "seediv"
    if len(trials) == 15:
        return "seed"
    raise RecordingRejected(
        f"unrecognised .mat layout (variables {short(sorted(names)[:8], 200)}); expected SEED (15 *_eegN), "
        "SEED-IV (24 *_eegN), DREAMER or AMIGOS; pass the format explicitly"
        + ("; a 'val' variable is a WFDB signal file (MATLAB format): is its .hea header missing?"
           if names == ["val"] else ""), "dataset_layout")


def read_seed(path: str, source: str, label_path: str | None = None, dataset: str = "seed",
              budget: FileBudget | None = None) -> list[Recording]:
    """SEED `{subject}_{date}.mat` (15 trials) or SEED-IV `{session}/{subject}_{date}.mat` (24)."""
    content = load(path, budget)
    keys = sorted((k for k in content if _TRIAL_KEY.search(k)), key=lambda k: int(_TRIAL_KEY.search(k)[1]))
    if not keys:
        names = sorted(k for k in content if not k.startswith('__'))
        raise RecordingRejected(f"no trial variables named *_eegN in {short(names[:12], 200)}", "dataset_layout")
    stem = Path(source).stem
    subject, _, date = stem.partition("_")
    classes, session, notes = _seed_classes(dataset, source, label_path, len(keys), budget)
    recordings = []
    for index, key in enumerate(keys):
        trial = np.asarray(content[key], dtype=np.float64)
        if trial.ndim != 2 or trial.shape[0] != len(SEED_62):
            raise RecordingRejected(f"{key} must be ({len(SEED_62)}, samples); got {trial.shape}", "dataset_layout")
        recordings.append(Recording(
            data=trial, ch_names=list(SEED_62), ch_types=["eeg"] * len(SEED_62), units=["uV"] * len(SEED_62),
            sfreq=SEED_SFREQ, source=source, dataset=dataset, subject=subject, session=session or date,
            trial=str(int(_TRIAL_KEY.search(key)[1])), label=classes[index],
            meta={"format": dataset, "notes": notes, "nan_samples": int(np.isnan(trial).sum())},
        ))
    return recordings


def _seed_classes(dataset: str, source: str, label_path: str | None, n_trials: int, budget: FileBudget | None = None):
    if dataset == "seediv":
        session = Path(source).parent.name
        if session not in SEED_IV_LABELS:
            return [-1] * n_trials, session, [f"session folder {session!r} is not 1/2/3: labels unknown"]
        return list(SEED_IV_LABELS[session][:n_trials]), session, []
    if label_path is None:
        return [-1] * n_trials, "", ["label.mat not found beside the file: labels unknown"]
    raw = np.asarray(load(label_path, budget).get("label", np.array([]))).ravel()
    if raw.size != n_trials or raw.dtype == object or not np.isin(raw, list(SEED_CLASSES)).all():
        shown = short(raw[:16].tolist(), 120) + (f" ... ({raw.size} values)" if raw.size > 16 else "")
        raise RecordingRejected(f"label.mat 'label' must hold {n_trials} values in {{-1, 0, 1}}; got {shown}",
                                "dataset_layout")
    return [SEED_CLASSES[int(v)] for v in raw], "", []


def read_dreamer(path: str, source: str, budget: FileBudget | None = None) -> list[Recording]:
    """Every subject × film of `DREAMER.mat`: 14 EEG + 2 ECG, the ECG resampled to the EEG rate."""
    budget = budget or FileBudget()
    try:
        root = load(path, budget)["DREAMER"][0, 0]
        subjects = root["Data"][0]
        eeg_rate, ecg_rate = float(root["EEG_SamplingRate"].squeeze()), float(root["ECG_SamplingRate"].squeeze())
        electrodes = [str(np.asarray(e).squeeze()) for e in root["EEG_Electrodes"].ravel()]
    except (KeyError, IndexError, ValueError) as error:
        raise RecordingRejected(f"DREAMER.mat lacks the DREAMER struct layout: {error_text(error)}", "dataset_layout")
    # The rates are the file's own: a garbled one must not make the ECG resampling allocate gigabytes.
    budget.check("DREAMER.mat", Path(path).stat().st_size,
                 [DeclaredSignal("EEG", "eeg", eeg_rate, 0), DeclaredSignal("ECG", "ecg", ecg_rate, 0)],
                 read_rate_hz=eeg_rate, duration_s=0.0)
    ratio = Fraction(eeg_rate / ecg_rate).limit_denominator(1000)
    names = electrodes + ["ECG1", "ECG2"]
    recordings = []
    for s, subject in enumerate(subjects):
        eeg, ecg = subject["EEG"][0, 0], subject["ECG"][0, 0]
        scores = {k: np.asarray(subject[f"Score{k.capitalize()}"][0, 0], dtype=float).ravel()
                  for k in ("valence", "arousal", "dominance")}
        for t in range(eeg["stimuli"][0, 0].shape[0]):
            parts = {}
            for part in ("stimuli", "baseline"):
                eeg_part = np.asarray(eeg[part][0, 0][t, 0], dtype=np.float64).T
                ecg_native = np.asarray(ecg[part][0, 0][t, 0], dtype=np.float64).T
                ecg_part = np.stack([resample_marking_invalid(row, ratio.numerator, ratio.denominator)
                                     for row in ecg_native]) if ecg_native.size else ecg_native
                if part == "stimuli":
                    invalid = int(np.isnan(eeg_part).sum() + np.isnan(ecg_native).sum())
                n = min(eeg_part.shape[1], ecg_part.shape[1])
                parts[part] = np.concatenate([eeg_part[:, :n], ecg_part[:, :n]])
            recordings.append(Recording(
                data=parts["stimuli"], baseline=parts["baseline"], ch_names=names,
                ch_types=["eeg"] * len(electrodes) + ["ecg", "ecg"], units=["uV"] * len(electrodes) + ["NU", "NU"],
                sfreq=eeg_rate, source=source, dataset="dreamer", subject=f"{s + 1:02d}", trial=f"{t + 1:02d}",
                labels={k: float(v[t]) for k, v in scores.items()},
                meta={"format": "dreamer", "resampled": {"ECG": f"{ecg_rate:g} Hz -> {eeg_rate:g} Hz"},
                      "nan_samples": invalid},
                native_rates=[eeg_rate] * len(electrodes) + [ecg_rate, ecg_rate],
            ))
    return recordings


def read_amigos(path: str, source: str, budget: FileBudget | None = None) -> list[Recording]:
    """`Data_Preprocessed_P{NN}.mat`: 20 trials × (14 EEG, 2 ECG, GSR) at 128 Hz; empty trials skipped."""
    content = load(path, budget)
    if "joined_data" not in content:
        raise RecordingRejected("AMIGOS file lacks 'joined_data'", "dataset_layout")
    trials = content["joined_data"].ravel()
    ratings = content.get("labels_selfassessment", np.empty((1, 0), dtype=object)).ravel()
    subject = Path(source).stem.rsplit("_", 1)[-1]
    recordings, empty = [], []
    for t, trial in enumerate(trials):
        trial = np.asarray(trial, dtype=np.float64)
        if trial.size == 0:
            empty.append(t + 1)
            continue
        if trial.ndim != 2 or trial.shape[1] != len(AMIGOS_CHANNELS):
            raise RecordingRejected(f"AMIGOS trial {t + 1} must be (samples, 17); got {trial.shape}", "dataset_layout")
        scores = np.asarray(ratings[t], dtype=np.float64).ravel() if t < len(ratings) else np.array([])
        recordings.append(Recording(
            data=np.ascontiguousarray(trial.T), ch_names=list(AMIGOS_CHANNELS), ch_types=list(AMIGOS_TYPES),
            units=list(AMIGOS_UNITS), sfreq=AMIGOS_SFREQ, source=source, dataset="amigos", subject=subject,
            trial=f"{t + 1:02d}",
            labels={k: float(v) for k, v in zip(AMIGOS_RATINGS, scores) if not math.isnan(v)},
            meta={"format": "amigos", "nan_samples": int(np.isnan(trial).sum())},
        ))
    for recording in recordings:
        recording.meta["notes"] = [f"empty trials skipped: {empty}"] if empty else []
    if not recordings:
        raise RecordingRejected(f"no signal: all {len(trials)} AMIGOS trials are empty", "no_signal")
    return recordings
