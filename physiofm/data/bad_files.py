"""Bad inputs for robustness tests: each helper writes one kind of damaged or hostile file."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np


def truncated(source: str | Path, target: str | Path, keep: float = 0.5) -> Path:
    """A copy of `source` cut to `keep` of its bytes (a failed upload, a full disk)."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: int(len(data) * keep)])
    return Path(target)


def bit_flipped(source: str | Path, target: str | Path, offsets: tuple[int, ...] = (236, 237, 252)) -> Path:
    """A copy with the bytes at `offsets` inverted (default: an EDF header's record count and
    signal count, so the damage is detectable; flips inside samples cannot be told from signal)."""
    data = bytearray(Path(source).read_bytes())
    for offset in offsets:
        data[offset] ^= 0xFF
    Path(target).write_bytes(bytes(data))
    return Path(target)


def empty(target: str | Path) -> Path:
    Path(target).write_bytes(b"")
    return Path(target)


def wrong_extension(source: str | Path, target: str | Path) -> Path:
    """`source`'s bytes under a name whose extension promises another format."""
    shutil.copyfile(source, target)
    return Path(target)


def nan_record(folder: str | Path, name: str = "nan_record", seconds: float = 10.0, sfreq: float = 500.0) -> Path:
    """A 12-lead WFDB record whose every sample is the format's invalid value (reads as NaN)."""
    import wfdb

    from physiofm.data.channels import ECG_12

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.full((int(seconds * sfreq), len(ECG_12)), np.nan)
    wfdb.wrsamp(name, fs=sfreq, units=["mV"] * 12, sig_name=list(ECG_12), p_signal=signal, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return folder / f"{name}.hea"


class _WouldRun:
    """Pickles as a call to builtins.open(marker, 'w'): loading it with pickle.load creates `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def hostile_pickle(target: str | Path, marker: str | Path) -> Path:
    """A DEAP-shaped `.dat` whose 'data' entry runs code when unpickled (it would create `marker`)."""
    content = {"data": _WouldRun(str(marker)), "labels": np.ones((1, 4))}
    Path(target).write_bytes(pickle.dumps(content, protocol=2))
    return Path(target)


def nan_filled_deap(target: str | Path, n_trials: int = 1) -> Path:
    """A DEAP-shaped `.dat` whose signals are all NaN (a failed export)."""
    content = {"data": np.full((n_trials, 40, 8064), np.nan, dtype=np.float32), "labels": np.ones((n_trials, 4))}
    Path(target).write_bytes(pickle.dumps(content, protocol=2))
    return Path(target)
