"""The in-memory recording every reader returns and every preprocessing step transforms."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CHANNEL_TYPES = ("eeg", "ecg", "eog", "emg", "gsr", "resp", "ppg", "temp", "stim", "misc")

# Factor that turns a value in the unit into volts; other units (NU, bpm, µS...) are not voltages.
VOLTS_PER_UNIT = {"v": 1.0, "mv": 1e-3, "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "nv": 1e-9}


class RecordingRejected(Exception):
    """A recording that cannot give windows; the message is the reason written to the manifest."""


@dataclass
class Recording:
    """One continuous multichannel signal (a file, or one trial of a multi-trial file).

    `data` is (channels, samples) float64 in the physical unit of each channel (`units`);
    `baseline` holds the dataset's pre-trial baseline samples where it defines one.
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

    def __post_init__(self):
        if self.data.ndim != 2:
            raise ValueError(f"data must be (channels, samples), got shape {self.data.shape}")
        n = self.data.shape[0]
        for name in ("ch_names", "ch_types", "units"):
            if len(getattr(self, name)) != n:
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
        return self.replace(
            data=self.data[indices],
            ch_names=[self.ch_names[i] for i in indices],
            ch_types=[self.ch_types[i] for i in indices],
            units=[self.units[i] for i in indices],
            baseline=None if self.baseline is None else self.baseline[indices],
        )

    def volts_per_unit(self) -> np.ndarray:
        """Per-channel factor to volts; NaN for channels whose unit is not a voltage."""
        return np.array([VOLTS_PER_UNIT.get(u.strip().lower(), np.nan) for u in self.units])


def check_signal(rec: Recording) -> Recording:
    """Reject recordings that hold no signal at all, before any processing."""
    if rec.data.shape[0] == 0:
        raise RecordingRejected("no signal: the file holds no signal channels (annotations only?)")
    if rec.n_samples == 0:
        raise RecordingRejected("no signal: 0 samples")
    return rec
