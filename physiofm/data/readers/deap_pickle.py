"""DEAP `data_preprocessed_python/sXX.dat`: a Python 2 pickle, read with a restricted unpickler.

A pickle runs code when loaded: only numpy arrays and plain builtin containers may be built, and
any other global (os.system, builtins.exec, ...) rejects the file before anything runs.
"""
from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from physiofm.data.channels import DEAP_EEG_32, DEAP_PERIPHERAL
from physiofm.data.recording import Recording, RecordingRejected, error_text

SFREQ = 128.0
BASELINE_S = 3.0
N_CHANNELS = 40
LABEL_NAMES = ("valence", "arousal", "dominance", "liking")

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                  "bytes", "bytearray", "bool", "slice"}


class ForbiddenGlobal(pickle.UnpicklingError):
    pass


def _latin1_encode(text, encoding="latin1", *errors):
    # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(text, 'latin1').
    if codecs.lookup(encoding).name != "iso8859-1":
        raise ForbiddenGlobal(f"_codecs.encode with encoding {encoding!r}; only latin-1 is allowed")
    return codecs.encode(text, "latin1")


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return super().find_class("builtins", name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise ForbiddenGlobal(
            f"forbidden global {module}.{name} in pickle (only numpy arrays and builtin containers are allowed)"
        )


def restricted_loads(data: bytes, encoding: str = "latin1"):
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def read_deap(path: str, source: str) -> list[Recording]:
    """40 trials of 60 s (the 3-s pre-trial baseline kept apart) with the four ratings."""
    raw = Path(path).read_bytes()
    if not raw:
        raise RecordingRejected("empty file (0 bytes)", "empty_file")
    try:
        content = restricted_loads(raw)
    except ForbiddenGlobal as error:
        raise RecordingRejected(f"hostile or foreign pickle rejected unexecuted: {error}", "hostile_pickle")
    except Exception as error:  # noqa: BLE001 - truncated/corrupt pickles fail in many ways
        raise RecordingRejected(f"not a readable DEAP pickle: {error_text(error)}", "unreadable")
    data, labels = _validate(content)
    names = list(DEAP_EEG_32) + [name for name, _, _ in DEAP_PERIPHERAL]
    types = ["eeg"] * 32 + [kind for _, kind, _ in DEAP_PERIPHERAL]
    units = ["uV"] * 32 + [unit for _, _, unit in DEAP_PERIPHERAL]
    split = int(BASELINE_S * SFREQ)
    subject = Path(source).stem
    return [
        Recording(
            data=np.asarray(trial[:, split:], dtype=np.float64), baseline=np.asarray(trial[:, :split], dtype=np.float64),
            ch_names=names, ch_types=types, units=units, sfreq=SFREQ, source=source, dataset="deap",
            subject=subject, trial=f"{index + 1:02d}",
            labels={name: float(value) for name, value in zip(LABEL_NAMES, labels[index])},
            meta={"format": "deap", "nan_samples": int(np.isnan(trial).sum())},
        )
        for index, trial in enumerate(data)
    ]


def _validate(content) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(content, dict) or not {"data", "labels"} <= set(content):
        keys = sorted(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise RecordingRejected(f"DEAP pickle must be a dict with 'data' and 'labels'; got {keys}", "dataset_layout")
    data, labels = content["data"], content["labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 3 or data.shape[1] != N_CHANNELS:
        shape = getattr(data, "shape", type(data).__name__)
        raise RecordingRejected(f"DEAP 'data' must be (trials, {N_CHANNELS}, samples); got {shape}", "dataset_layout")
    if data.shape[2] <= BASELINE_S * SFREQ:
        raise RecordingRejected(f"DEAP trials hold {data.shape[2]} samples, not more than the 3-s baseline", "dataset_layout")
    if not isinstance(labels, np.ndarray) or labels.shape != (data.shape[0], len(LABEL_NAMES)):
        raise RecordingRejected(f"DEAP 'labels' must be ({data.shape[0]}, 4); got {getattr(labels, 'shape', None)}", "dataset_layout")
    return data, labels
