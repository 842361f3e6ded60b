"""Preprocessing steps: small configured callables `Recording -> Recording`, composed by presets.

Each step is a frozen dataclass (its fields are its whole configuration) and raises
`RecordingRejected` with a reason when a recording cannot go on.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
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

    def needed(self, labels: list[str]) -> list[int] | None:
        """Indices of the file's channels this step keeps, for readers that can decode only those;
        None (decode all) when the step will reject the file, so that its reason can name them."""
        found = find_channels(self.names, labels, self.kind)
        present = list(dict.fromkeys(index for index in found if index is not None))  # in the wanted order
        if not present or (self.missing == "reject" and None in found):
            return None
        return present

    def __call__(self, rec: Recording) -> Recording:
        found = find_channels(self.names, rec.ch_names, self.kind)
        unusable = rec.meta.get("unusable", {})
        left_out = {}  # wanted channels the reader found unusable (uncalibrated, undefined scale)
        for k, index in enumerate(found):
            if index is not None and rec.ch_names[index] in unusable:
                left_out[self.names[k]] = unusable[rec.ch_names[index]]
                found[k] = None
        present = [index for index in found if index is not None]
        absent = [name for name, index in zip(self.names, found) if index is None and name not in left_out]
        why = "; ".join(f"{name}: {reason}" for name, reason in left_out.items())
        if not present:
            if left_out:
                raise RecordingRejected(f"no usable {self.kind} channel: {why}", "unusable_channel")
            if rec.meta.get("unnamed"):
                raise RecordingRejected(
                    f"none of the {self.kind} channels {list(self.names)} can be identified: the file names none of "
                    f"its {len(rec.ch_names)} signals (the description field is optional in WFDB headers)",
                    "missing_channels")
            raise RecordingRejected(f"none of the {self.kind} channels {list(self.names)} found "
                                    f"(channels in file: {rec.ch_names[:40]})", "missing_channels")
        if self.missing == "reject" and left_out:
            raise RecordingRejected(f"channels {list(left_out)} cannot be used: {why}", "unusable_channel")
        if absent and self.missing == "reject":
            raise RecordingRejected(f"missing channels {absent} (required: {list(self.names)})", "missing_channels")
        mask = [index is not None for index in found]
        picked = rec.pick(present)
        notes = list(rec.meta.get("notes", [])) + ([f"treated as absent: {why}"] if left_out else [])
        meta = {k: v for k, v in rec.meta.items() if k != "unusable"}
        return picked.replace(
            ch_names=[name for name, keep in zip(self.names, mask) if keep], ch_types=[self.kind] * len(present),
            meta={**meta, "channel_mask": mask, "channel_names": list(self.names), "notes": notes},
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
                           ch_types=[rec.ch_types[0]] * mask.size, native_rates=None,
                           units=[next(units) if present else rec.units[0] for present in mask])


@dataclass(frozen=True)
class SelectTypes:
    """Keep the channels of these types, in file order."""

    types: tuple[str, ...]

    def __call__(self, rec: Recording) -> Recording:
        unusable = rec.meta.get("unusable", {})
        wanted = [i for i, kind in enumerate(rec.ch_types) if kind in self.types]
        keep = [i for i in wanted if rec.ch_names[i] not in unusable]
        left_out = {rec.ch_names[i]: unusable[rec.ch_names[i]] for i in wanted if i not in keep}
        if not keep and left_out:
            raise RecordingRejected(f"no usable channel of types {list(self.types)}: "
                                    + "; ".join(f"{k}: {v}" for k, v in left_out.items()), "unusable_channel")
        if left_out:
            notes = list(rec.meta.get("notes", [])) + [f"left out: {'; '.join(f'{k}: {v}' for k, v in left_out.items())}"]
            rec = rec.replace(meta={**rec.meta, "notes": notes})
        if not keep:
            raise RecordingRejected(f"no channel of types {list(self.types)} (types in file: {sorted(set(rec.ch_types))})",
                                    "missing_channels")
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
        if np.isfinite(np.sum(rec.data)):  # one pass, no temporary: no NaN or inf anywhere
            return rec
        invalid = ~np.isfinite(rec.data)
        if not invalid.any():
            return rec
        # Counted in recorded samples: a channel a reader upsampled by 16 has 16 samples per recorded one.
        per_sample = np.ones(rec.data.shape[0]) if rec.native_rates is None else np.asarray(rec.native_rates) / rec.sfreq
        count = int(round(float(invalid.sum(axis=1) @ per_sample)))
        fraction = count / (rec.n_samples * per_sample.sum())
        if self.policy == "reject" or fraction > self.max_fraction:
            raise RecordingRejected(
                f"NaN samples: {count} ({fraction:.1%} of the signal; policy {self.policy}, limit {self.max_fraction:.1%})",
                "nan_samples")
        empty = [rec.ch_names[c] for c in np.flatnonzero(invalid.all(axis=1))]
        if empty:
            raise RecordingRejected(f"NaN samples: channels {empty} hold no valid sample", "nan_samples")
        longest = _longest_run(invalid) / rec.sfreq
        if longest > self.max_gap_s:
            raise RecordingRejected(f"NaN gap of {longest:.2f} s (limit {self.max_gap_s} s)", "nan_samples")
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
class RemoveDC:
    """Subtract from each channel the straight line between the means of its first and last
    `edge_s` seconds: its DC offset, and the drift between its ends, go before any step that pads the
    edges (resampling pads with zeros, filters extend the signal), so that an offset of millivolts
    never rings into the kept signal. Followed by a high-pass (of order >= 2, which removes any
    straight line) it leaves the interior of a recording as it was."""

    edge_s: float = 0.1

    def __call__(self, rec: Recording) -> Recording:
        start, end, ramp = dc_line(rec.data, rec.sfreq, self.edge_s)
        out = np.empty_like(rec.data)
        for row in range(rec.data.shape[0]):  # one channel at a time: no recording-sized temporaries
            np.subtract(rec.data[row], start[row] + (end[row] - start[row]) * ramp, out=out[row])
        return rec.replace(data=out)


def dc_line(data: np.ndarray, sfreq: float, edge_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, ramp) of `RemoveDC`'s line: channel `c`'s is `start[c] + (end[c] - start[c]) * ramp`."""
    n = data.shape[1]
    width = max(1, min(n // 2, int(round(edge_s * sfreq))))
    return data[:, :width].mean(axis=1), data[:, -width:].mean(axis=1), np.linspace(0.0, 1.0, n)


@dataclass(frozen=True)
class Resample:
    """Polyphase resampling to `sfreq` (the baseline too)."""

    sfreq: float

    def __call__(self, rec: Recording) -> Recording:
        if rec.sfreq == self.sfreq:
            return rec
        ratio = Fraction(self.sfreq / rec.sfreq).limit_denominator(1000)
        up, down = ratio.numerator, ratio.denominator
        if up == 0 or up > 1000:  # a rate no recording of these signals has (a misread header, a bomb)
            raise RecordingRejected(f"cannot resample {rec.sfreq:g} Hz to {self.sfreq:g} Hz (a ratio beyond "
                                    "1000:1 or 1:1000)", "sampling_rate")

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
        sos = _butter_sos(self.order, self.low, self.high, rec.sfreq)
        return rec.replace(data=_filter(lambda x: sosfiltfilt(sos, x, axis=1), rec))


@lru_cache(maxsize=32)
def _butter_sos(order: int, low: float, high: float, sfreq: float) -> np.ndarray:
    if high < sfreq / 2:
        return butter(order, (low, high), btype="bandpass", fs=sfreq, output="sos")
    return butter(order, low, btype="highpass", fs=sfreq, output="sos")


@dataclass(frozen=True)
class Notch:
    """Zero-phase IIR notch at the mains frequency (skipped when above Nyquist)."""

    freq: float = 60.0
    quality: float = 30.0

    def __call__(self, rec: Recording) -> Recording:
        if self.freq >= rec.sfreq / 2:
            return rec
        b, a = _notch_ba(self.freq, self.quality, rec.sfreq)
        return rec.replace(data=_filter(lambda x: filtfilt(b, a, x, axis=1), rec))


@lru_cache(maxsize=32)
def _notch_ba(freq: float, quality: float, sfreq: float) -> tuple[np.ndarray, np.ndarray]:
    return iirnotch(freq, quality, fs=sfreq)


def _filter(apply, rec: Recording) -> np.ndarray:
    try:
        return apply(rec.data)
    except ValueError as error:  # filtfilt's padding needs a few filter lengths of signal
        raise RecordingRejected(f"too short to filter ({rec.duration_s:.2f} s): {error}", "too_short")


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
            raise RecordingRejected(f"cannot scale units {bad} to {self.unit}; voltage units: {sorted(VOLTS_PER_UNIT)}",
                                    "units")
        gain = np.ones(rec.data.shape[0])
        gain[rows] = per_unit / VOLTS_PER_UNIT[self.unit.lower()] * self.factor
        units = [self.unit if i in rows else u for i, u in enumerate(rec.units)]

        def scale(x):
            return None if x is None else x * gain[:, None].astype(x.dtype)  # float32 data stays float32

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
            raise RecordingRejected(f"baseline or trial shorter than one {self.segment_s} s segment", "too_short")
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
            raise RecordingRejected(f"too short: {rec.duration_s:.1f} s < minimum {self.min_duration_s:g} s", "too_short")
        cut = int(round(self.trim_s * rec.sfreq))
        if cut == 0:
            return rec
        if 2 * cut >= rec.n_samples:
            raise RecordingRejected(f"too short to trim {self.trim_s:g} s at both ends: {rec.duration_s:.1f} s", "too_short")
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
            raise RecordingRejected(f"z-scoring across channels needs >= 2 channels of types {list(self.types)}",
                                    "missing_channels")
        data = rec.data.copy()
        block = data[rows]
        data[rows] = (block - block.mean(axis=0)) / (block.std(axis=0) + self.eps)
        return rec.replace(data=data)


STEPS = (SelectChannels, FillAbsentChannels, SelectTypes, RepairNaN, RemoveDC, Resample, BandPass, Notch, Scale, RemoveBaseline, Crop,
         ZScoreAcrossChannels)
