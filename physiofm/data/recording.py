"""The in-memory recording every reader returns and every preprocessing step transforms."""
from __future__ import annotations

import dataclasses
import reprlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHANNEL_TYPES = ("eeg", "ecg", "eog", "emg", "gsr", "resp", "ppg", "temp", "stim", "misc")

# Factor that turns a value in the unit into volts; other units (NU, bpm, µS...) are not voltages.
VOLTS_PER_UNIT = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "nv": 1e-9}


# Machine-readable causes of a rejection (the manifest's `reason_code`), so that a corpus of many
# files can be summarised by cause; the reason beside it says, for a person, what and where.
REASON_CODES = {
    "empty_file": "the file holds 0 bytes",
    "unsupported_format": "no reader for this extension or format",
    "unreadable": "the file cannot be decoded as the format its name or header says",
    "truncated": "the file is shorter than its header declares",
    "missing_file": "a file the header names (signal file, segment, label file) is absent",
    "header_field": "a header field is malformed, out of range, or was misread by the library",
    "layout_header": "a WFDB layout header: signal names and gains of a multi-segment record, no samples",
    "orphan_signal_file": "a WFDB signal file that no header names",
    "dataset_layout": "the content does not follow the dataset's documented layout",
    "hostile_pickle": "a pickle that would run code or build objects other than arrays",
    "no_signal": "the file holds no signal samples",
    "missing_channels": "channels the preset needs are absent or cannot be identified",
    "unusable_channel": "a needed channel is uncalibrated or has an undefined scale",
    "units": "a needed channel's unit cannot be converted to the preset's unit",
    "sampling_rate": "the sampling rate is too low for the preset",
    "too_short": "shorter than the preset needs",
    "nan_samples": "too many invalid (NaN) samples, or too long a gap",
    "amplitude": "no window within the preset's amplitude bounds",
    "shape_mismatch": "window shapes differ from the rest of the corpus",
    "too_large": "what it declares or needs is beyond the per-file budget (memory, size against its bytes on disk)",
    "too_slow": "processing it took longer than the per-file time limit",
    "storage": "storage kept failing (retryable, not the recording's fault)",
    "worker_failed": "the worker process died on this file",
    "no_report": "its task reported nothing",
    "internal_error": "an unexpected error in physiofm itself (a bug: please report it)",
    "unclassified": "rejected without a reason code (a step that names none, or an output of an older version)",
}


class RecordingRejected(Exception):
    """A recording that cannot give windows; the message is the reason written to the manifest and
    `code` (one of `REASON_CODES`) the cause it is counted under."""

    def __init__(self, reason: str, code: str = "unclassified"):
        if code not in REASON_CODES:
            raise ValueError(f"reason code must be one of {sorted(REASON_CODES)}, got {code!r}")
        super().__init__(reason)
        self.code = code


MAX_ERROR_CHARS = 300  # a library's message can quote a whole file


def error_text(error: BaseException) -> str:
    """A library error's message for a reason, without Python's exception class names, at most
    `MAX_ERROR_CHARS` long."""
    if isinstance(error, KeyError) and error.args:  # its text is the key's repr, whatever the key holds
        return f"no entry {short(error.args[0], 100)}"
    try:
        text = cap(str(error).strip(), MAX_ERROR_CHARS)
    except Exception:  # noqa: BLE001 - a message that cannot be built says nothing
        text = ""
    if text:
        return text
    return {"EOFError": "the data ends early (truncated?)", "MemoryError": "needs more memory than is available",
            "StopIteration": "the data ends early (truncated?)"}.get(type(error).__name__, "the decoder gave no message")


def cap(text: str, limit: int = 400) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    tail = f" ... [{len(text)} characters]"
    return text[: max(0, limit - len(tail))] + tail


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 6, 4
_SHORT.maxset = _SHORT.maxfrozenset = _SHORT.maxdeque = _SHORT.maxarray = 4
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlong = 40


def short(value: Any, limit: int = 120) -> str:
    """A bounded description of anything a file holds (a key, a value, a label) for a reason:
    nested or huge content never becomes a huge string (reprlib's limits, then `cap`)."""
    if isinstance(value, str):
        return cap(repr(value[: limit + 1]), limit)
    try:
        return cap(_SHORT.repr(value), limit)
    except Exception:  # noqa: BLE001 - a repr that fails says nothing worth a reason
        return f"<{type(value).__name__}>"


@dataclass
class Recording:
    """One continuous multichannel signal (a file, or one trial of a multi-trial file).

    `data` is (channels, samples) in the physical unit of each channel (`units`): float64 from the
    readers, float32 after a step computed in single precision (`MNEResampleFilter`);
    `baseline` holds the dataset's pre-trial baseline samples where it defines one;
    `native_rates` the rate each channel was recorded at where a reader resampled some (None: all
    were recorded at `sfreq` or at one rate), so that invalid samples are counted in recorded time.
    """

    data: np.ndarray
    ch_names: list[str]
    ch_types: list[str]
    units: list[str]
    sfreq: float
    source: str
    dataset: str
    subject: str = ""
    session: str = ""
    trial: str = ""
    label: int = -1
    labels: dict[str, float] = field(default_factory=dict)
    baseline: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    native_rates: list[float] | None = None

    def __post_init__(self):
        if self.data.ndim != 2:
            raise ValueError(f"data must be (channels, samples), got shape {self.data.shape}")
        n = self.data.shape[0]
        for name in ("ch_names", "ch_types", "units", "native_rates"):
            if getattr(self, name) is not None and len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} channels")
        bad = sorted(set(self.ch_types) - set(CHANNEL_TYPES))
        if bad:
            raise ValueError(f"unknown channel types {bad}; allowed: {CHANNEL_TYPES}")
        if not self.sfreq > 0:
            raise ValueError(f"sfreq must be > 0, got {self.sfreq}")

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sfreq

    def replace(self, **changes: Any) -> Recording:
        return dataclasses.replace(self, **changes)

    def pick(self, indices: list[int] | np.ndarray) -> Recording:
        indices = list(indices)
        if indices == list(range(self.data.shape[0])):
            return self.replace()  # all channels in their order: no copy of the samples
        return self.replace(
            data=self.data[indices],
            ch_names=[self.ch_names[i] for i in indices],
            ch_types=[self.ch_types[i] for i in indices],
            units=[self.units[i] for i in indices],
            baseline=None if self.baseline is None else self.baseline[indices],
            native_rates=None if self.native_rates is None else [self.native_rates[i] for i in indices],
        )

    def volts_per_unit(self) -> np.ndarray:
        """Per-channel factor to volts; NaN for channels whose unit is not a voltage."""
        return np.array([VOLTS_PER_UNIT.get(u.strip().lower(), np.nan) for u in self.units])


def check_signal(rec: Recording) -> Recording:
    """Reject recordings that hold no signal at all, before any processing."""
    if rec.data.shape[0] == 0:
        raise RecordingRejected("no signal: the file holds no signal channels (annotations only?)", "no_signal")
    if rec.n_samples == 0:
        raise RecordingRejected("no signal: 0 samples", "no_signal")
    return rec
