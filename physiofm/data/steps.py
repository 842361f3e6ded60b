"""Preprocessing steps: small configured callables `Recording -> Recording`, composed by presets.

Each step is a frozen dataclass (its fields are its whole configuration) and raises
`RecordingRejected` with a reason when a recording cannot go on.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import numpy as np
from scipy.signal import butter, filtfilt, iirnotch, resample_poly, sosfiltfilt

from physiofm.data.channels import find_channels
from physiofm.data.recording import VOLTS_PER_UNIT, Recording, RecordingRejected


def _check_choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class SelectChannels:
    """Keep `names` (canonical 10-20 names or ECG leads) in this order, renamed to them.

    missing='reject' rejects a recording lacking any; 'zero_fill' keeps the present ones and notes
    the full list and mask in `meta` for `FillAbsentChannels` (a recording with none is rejected).
    """

    names: tuple[str, ...]
    kind: Literal["eeg", "ecg"] = "eeg"
    missing: Literal["reject", "zero_fill"] = "reject"

    def __post_init__(self):
        _check_choice("kind", self.kind, ("eeg", "ecg"))
        _check_choice("missing", self.missing, ("reject", "zero_fill"))

    def __call__(self, rec: Recording) -> Recording:
        found = find_channels(self.names, rec.ch_names, self.kind)
        present = [index for index in found if index is not None]
        absent = [name for name, index in zip(self.names, found) if index is None]
        if not present:
            raise RecordingRejected(f"none of the {self.kind} channels {list(self.names)} found "
                                    f"(channels in file: {rec.ch_names[:40]})")
        if absent and self.missing == "reject":
            raise RecordingRejected(f"missing channels {absent} (required: {list(self.names)})")
        mask = [index is not None for index in found]
        picked = rec.pick(present)
        return picked.replace(
            ch_names=[name for name, keep in zip(self.names, mask) if keep], ch_types=[self.kind] * len(present),
            meta={**rec.meta, "channel_mask": mask, "channel_names": list(self.names)},
        )


@dataclass(frozen=True)
class FillAbsentChannels:
    """Zero rows for the channels `SelectChannels(missing='zero_fill')` did not find.

    Placed last, so that filters and resampling never run on rows that are all zeros.
    """

    def __call__(self, rec: Recording) -> Recording:
        mask = np.asarray(rec.meta["channel_mask"], dtype=bool)
        if mask.all():
            return rec

        def fill(rows):
            if rows is None:
                return None
            full = np.zeros((mask.size, rows.shape[1]))
            full[mask] = rows
            return full

        units = iter(rec.units)
        return rec.replace(data=fill(rec.data), baseline=fill(rec.baseline), ch_names=list(rec.meta["channel_names"]),
                           ch_types=[rec.ch_types[0]] * mask.size,
                           units=[next(units) if present else rec.units[0] for present in mask])


@dataclass(frozen=True)
class SelectTypes:
    """Keep the channels of these types, in file order."""

    types: tuple[str, ...]

    def __call__(self, rec: Recording) -> Recording:
        keep = [i for i, kind in enumerate(rec.ch_types) if kind in self.types]
        if not keep:
            raise RecordingRejected(f"no channel of types {list(self.types)} (types in file: {sorted(set(rec.ch_types))})")
        return rec.pick(keep)


@dataclass(frozen=True)
class RepairNaN:
    """Explicit policy for invalid (NaN) samples: linear interpolation across short gaps, or reject.

    A recording is rejected when NaN exceed `max_fraction` of its samples or one gap is longer
    than `max_gap_s`; policy='reject' rejects any NaN.
    """

    max_fraction: float = 0.01
    max_gap_s: float = 0.5
    policy: Literal["interpolate", "reject"] = "interpolate"

    def __post_init__(self):
        _check_choice("policy", self.policy, ("interpolate", "reject"))

    def __call__(self, rec: Recording) -> Recording:
        invalid = ~np.isfinite(rec.data)
        count = int(invalid.sum())
        if count == 0:
            return rec
        fraction = count / invalid.size
        if self.policy == "reject" or fraction > self.max_fraction:
            raise RecordingRejected(
                f"NaN samples: {count} ({fraction:.1%} of the signal; policy {self.policy}, limit {self.max_fraction:.1%})"
            )
        longest = _longest_run(invalid) / rec.sfreq
        if longest > self.max_gap_s:
            raise RecordingRejected(f"NaN gap of {longest:.2f} s (limit {self.max_gap_s} s)")
        data = rec.data.copy()
        samples = np.arange(rec.n_samples)
        for channel in np.flatnonzero(invalid.any(axis=1)):
            bad = invalid[channel]
            data[channel, bad] = np.interp(samples[bad], samples[~bad], data[channel, ~bad])
        return rec.replace(data=data, meta={**rec.meta, "nan_interpolated": count})


def _longest_run(mask: np.ndarray) -> int:
    padded = np.pad(mask.astype(np.int8), ((0, 0), (1, 1)))
    edges = np.diff(padded, axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    return int((ends[1] - starts[1]).max())


@dataclass(frozen=True)
class Resample:
    """Polyphase resampling to `sfreq` (the baseline too)."""

    sfreq: float

    def __call__(self, rec: Recording) -> Recording:
        if rec.sfreq == self.sfreq:
            return rec
        ratio = Fraction(self.sfreq / rec.sfreq).limit_denominator(1000)
        up, down = ratio.numerator, ratio.denominator

        def resample(x):
            return None if x is None else resample_poly(x, up, down, axis=1)

        return rec.replace(data=resample(rec.data), baseline=resample(rec.baseline), sfreq=float(self.sfreq),
                           meta={**rec.meta, "source_sfreq": rec.meta.get("source_sfreq", rec.sfreq)})


@dataclass(frozen=True)
class BandPass:
    """Zero-phase Butterworth band-pass (second-order sections); high ≥ Nyquist means high-pass."""

    low: float
    high: float
    order: int = 4

    def __call__(self, rec: Recording) -> Recording:
        nyquist = rec.sfreq / 2
        if self.high < nyquist:
            sos = butter(self.order, (self.low, self.high), btype="bandpass", fs=rec.sfreq, output="sos")
        else:
            sos = butter(self.order, self.low, btype="highpass", fs=rec.sfreq, output="sos")
        return rec.replace(data=_filter(lambda x: sosfiltfilt(sos, x, axis=1), rec))


@dataclass(frozen=True)
class Notch:
    """Zero-phase IIR notch at the mains frequency (skipped when above Nyquist)."""

    freq: float = 60.0
    quality: float = 30.0

    def __call__(self, rec: Recording) -> Recording:
        if self.freq >= rec.sfreq / 2:
            return rec
        b, a = iirnotch(self.freq, self.quality, fs=rec.sfreq)
        return rec.replace(data=_filter(lambda x: filtfilt(b, a, x, axis=1), rec))


def _filter(apply, rec: Recording) -> np.ndarray:
    try:
        return apply(rec.data)
    except ValueError as error:  # filtfilt's padding needs a few filter lengths of signal
        raise RecordingRejected(f"too short to filter ({rec.duration_s:.2f} s): {error}")


@dataclass(frozen=True)
class Scale:
    """Convert channels of `types` from their unit to `unit`, then multiply by `factor`.

    CBraMod: EEG in µV × 0.01 (one unit = 100 µV); ECG recipe: mV × 1.
    """

    unit: str
    factor: float = 1.0
    types: tuple[str, ...] = ("eeg",)

    def __post_init__(self):
        _check_choice("unit", self.unit.lower(), tuple(VOLTS_PER_UNIT))

    def __call__(self, rec: Recording) -> Recording:
        rows = [i for i, kind in enumerate(rec.ch_types) if kind in self.types]
        per_unit = rec.volts_per_unit()[rows]
        if np.isnan(per_unit).any():
            bad = sorted({rec.units[i] for i, v in zip(rows, per_unit) if np.isnan(v)})
            raise RecordingRejected(f"cannot scale units {bad} to {self.unit}; voltage units: {sorted(VOLTS_PER_UNIT)}")
        gain = np.ones(rec.data.shape[0])
        gain[rows] = per_unit / VOLTS_PER_UNIT[self.unit.lower()] * self.factor
        units = [self.unit if i in rows else u for i, u in enumerate(rec.units)]

        def scale(x):
            return None if x is None else x * gain[:, None]

        return rec.replace(data=scale(rec.data), baseline=scale(rec.baseline), units=units)


@dataclass(frozen=True)
class RemoveBaseline:
    """Subtract the mean pre-trial segment from every segment of the trial (DEAP style).

    The baseline is cut into `segment_s` segments and averaged sample-wise; the trial is cut to
    whole segments. A no-op for recordings without a baseline.
    """

    segment_s: float = 1.0

    def __call__(self, rec: Recording) -> Recording:
        if rec.baseline is None:
            return rec
        width = int(round(self.segment_s * rec.sfreq))
        n_base, n_trial = rec.baseline.shape[1] // width, rec.n_samples // width
        if n_base == 0 or n_trial == 0:
            raise RecordingRejected(f"baseline or trial shorter than one {self.segment_s} s segment")
        channels = rec.data.shape[0]
        mean = rec.baseline[:, : n_base * width].reshape(channels, n_base, width).mean(axis=1)
        trial = rec.data[:, : n_trial * width].reshape(channels, n_trial, width) - mean[:, None, :]
        return rec.replace(data=trial.reshape(channels, -1), baseline=None)


@dataclass(frozen=True)
class Crop:
    """Reject recordings shorter than `min_duration_s`, then drop `trim_s` at both ends."""

    min_duration_s: float = 0.0
    trim_s: float = 0.0

    def __call__(self, rec: Recording) -> Recording:
        if rec.duration_s < self.min_duration_s:
            raise RecordingRejected(f"too short: {rec.duration_s:.1f} s < minimum {self.min_duration_s:g} s")
        cut = int(round(self.trim_s * rec.sfreq))
        if cut == 0:
            return rec
        if 2 * cut >= rec.n_samples:
            raise RecordingRejected(f"too short to trim {self.trim_s:g} s at both ends: {rec.duration_s:.1f} s")
        offset = rec.meta.get("offset_s", 0.0) + cut / rec.sfreq
        return rec.replace(data=rec.data[:, cut:-cut], meta={**rec.meta, "offset_s": offset})


@dataclass(frozen=True)
class ZScoreAcrossChannels:
    """Standardise channels of `types` across channels at every time sample (PhysioSync EEG)."""

    types: tuple[str, ...] = ("eeg",)
    eps: float = 1e-8

    def __call__(self, rec: Recording) -> Recording:
        rows = np.array([kind in self.types for kind in rec.ch_types])
        if rows.sum() < 2:
            raise RecordingRejected(f"z-scoring across channels needs >= 2 channels of types {list(self.types)}")
        data = rec.data.copy()
        block = data[rows]
        data[rows] = (block - block.mean(axis=0)) / (block.std(axis=0) + self.eps)
        return rec.replace(data=data)


STEPS = (SelectChannels, FillAbsentChannels, SelectTypes, RepairNaN, Resample, BandPass, Notch, Scale, RemoveBaseline, Crop,
         ZScoreAcrossChannels)
