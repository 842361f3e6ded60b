"""Aligned multi-modal windows: one tensor column per modality, all cut from the same seconds of the
same trial, each modality preprocessed the way its encoder was pretrained.

A `Branch` takes its channels from the recording, runs its own steps (its rate, filters and scale)
and cuts windows; `AlignedWindows` keeps the windows every branch kept (by window index, i.e. the
same seconds: branches may not crop), so a fusion head sees `eeg` (C, N, 200) and `ecg` (2, N, 200)
of one moment side by side.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from physiofm.data.recording import Recording, RecordingRejected
from physiofm.data.mne_filters import MNEResampleFilter
from physiofm.data.steps import BandPass, Crop, Notch, RemoveDC, Resample, Scale, SelectChannels, SelectTypes
from physiofm.data.windows import PatchWindows, Windows

PERIPHERAL_TYPES = ("gsr", "ppg", "resp", "temp")


@dataclass(frozen=True)
class VoltsOrStandardize:
    """Channels of `types` in a voltage unit are converted to `unit` (x `factor`); channels in no
    voltage unit (DREAMER's and AMIGOS' ECG are 'NU') are standardised over the trial to a std of
    `standard_std` instead, so that an encoder pretrained on `unit` sees amplitudes of its order.
    The trial's own statistics only: no information crosses from one trial to another."""

    unit: str = "mV"
    factor: float = 1.0
    types: tuple[str, ...] = ("ecg",)
    standard_std: float = 0.2

    def __call__(self, rec: Recording) -> Recording:
        rows = [i for i, kind in enumerate(rec.ch_types) if kind in self.types]
        per_unit = rec.volts_per_unit()
        voltage = [i for i in rows if np.isfinite(per_unit[i])]
        if voltage:
            scaled = Scale(self.unit, self.factor, self.types)(rec.pick(voltage))
            data = rec.data.copy()
            data[voltage] = scaled.data
            units = list(rec.units)
            for i in voltage:
                units[i] = self.unit
            rec = rec.replace(data=data, units=units)
        others = [i for i in rows if i not in voltage]
        if not others:
            return rec
        data = rec.data.copy()
        block = data[others]
        std = block.std(axis=1, keepdims=True)
        if not (std > 0).all():
            raise RecordingRejected(f"flat {self.types} channel(s) {[rec.ch_names[i] for i in others]}: nothing to scale",
                                    "unusable_channel")
        data[others] = (block - block.mean(axis=1, keepdims=True)) / std * self.standard_std
        units = list(rec.units)
        for i in others:
            units[i] = f"{self.unit} (standardised)"
        return rec.replace(data=data, units=units, meta={**rec.meta, "standardised": [rec.ch_names[i] for i in others]})


@dataclass(frozen=True)
class AroundMean:
    """Run a linear step (resampling) on the signal minus each channel's mean, then add the mean
    back: the same values inside, but no edge transient from a DC offset meeting the step's zero
    padding (DREAMER's Emotiv EEG sits at ~4200 µV, skin conductance at a few µS)."""

    step: Callable[[Recording], Recording]

    def __call__(self, rec: Recording) -> Recording:
        mean = rec.data.mean(axis=1, keepdims=True)
        base = None if rec.baseline is None else rec.baseline.mean(axis=1, keepdims=True)
        out = self.step(rec.replace(data=rec.data - mean, baseline=None if base is None else rec.baseline - base))
        return out.replace(data=out.data + mean, baseline=None if base is None else out.baseline + base)

    def to_dict(self) -> dict[str, Any]:
        return {"inner": describe(self.step)}


@dataclass(frozen=True)
class Branch:
    """One column of aligned windows: the channels of `types` (or the EEG `channels` by 10-20 name,
    in that order), the branch's `steps`, then `window` (a windowing stage writing `column`)."""

    column: str
    types: tuple[str, ...]
    steps: tuple[Callable[[Recording], Recording], ...]
    window: Callable[[Recording], Windows]
    channels: tuple[str, ...] = ()

    def __post_init__(self):
        if any(isinstance(step, Crop) for step in self.steps):
            raise ValueError(f"branch {self.column!r}: a Crop step would misalign its windows with the other branches")

    def __call__(self, rec: Recording) -> Windows:
        if self.channels:
            rec = SelectChannels(self.channels, kind="eeg", missing="reject")(rec)
        else:
            rec = SelectTypes(self.types)(rec)
        for step in self.steps:
            rec = step(rec)
        return self.window(rec)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "types": list(self.types), "channels": list(self.channels),
                "steps": [describe(step) for step in self.steps], "window": describe(self.window)}


@dataclass(frozen=True)
class AlignedWindows:
    """Windows of every branch at the same indices; a window is kept only where all branches kept it."""

    branches: tuple[Branch, ...]

    def __call__(self, rec: Recording) -> Windows:
        if not self.branches:
            raise ValueError("AlignedWindows needs at least one branch")
        parts = [branch(rec) for branch in self.branches]
        starts = {float(p.start_s[0] - p.index[0] * _window_s(b)) for p, b in zip(parts, self.branches) if len(p)}
        if len(starts) > 1:
            raise RecordingRejected(f"branches start at different offsets {sorted(starts)}: windows would not align",
                                    "internal_error")
        common = parts[0].index
        for part in parts[1:]:
            common = np.intersect1d(common, part.index)
        tensors, masks = {}, {}
        for part in parts:
            rows = np.searchsorted(part.index, common)
            tensors.update({name: values[rows] for name, values in part.tensors.items()})
            masks.update(part.masks)
        total = max(len(p) + p.n_rejected for p in parts)
        start = parts[0].start_s[np.searchsorted(parts[0].index, common)] if len(common) else np.zeros(0)
        return Windows(tensors, common.astype(np.int64), np.asarray(start, dtype=np.float64), total - len(common), masks)

    def to_dict(self) -> dict[str, Any]:
        return {"branches": [branch.to_dict() for branch in self.branches]}


def _window_s(branch: Branch) -> float:
    return float(getattr(branch.window, "window_s"))


def describe(part: Any) -> dict[str, Any]:
    """A preset part as a plain dict, its class named (nested parts too)."""
    if hasattr(part, "to_dict"):
        return {"step": type(part).__name__, **part.to_dict()}
    return {"step": type(part).__name__, **dataclasses.asdict(part)}


# ---------------------------------------------------------------- the encoders' recipes, as branches

def cbramod_branch(window_s: float, channels: tuple[str, ...] = (), notch_hz: float = 50.0) -> Branch:
    """CBraMod's EEG recipe (the `cbramod-eeg` preset's filters) without its pretraining crops and
    amplitude bound: MNE's resampling to 200 Hz, FIR 0.3-75 Hz and mains notch, µV / 100, patches of
    1 s; every EEG channel in file order, or `channels` by 10-20 name."""
    return Branch("eeg", ("eeg",), (RemoveDC(), MNEResampleFilter(200.0, 0.3, 75.0, notch=(notch_hz,)),
                                    Scale("uV", factor=0.01, types=("eeg",))),
                  PatchWindows(window_s=window_s, patch_s=1.0, column="eeg"), channels=tuple(channels))


def ecg_branch(window_s: float, notch_hz: float = 50.0) -> Branch:
    """The ECG encoder's recipe: 200 Hz, 0.5-45 Hz, mains notch, mV (standardised where the file
    gives no voltage unit), patches of 1 s."""
    return Branch("ecg", ("ecg",), (RemoveDC(), Resample(200.0), BandPass(0.5, 45.0), Notch(notch_hz),
                                    VoltsOrStandardize()),
                  PatchWindows(window_s=window_s, patch_s=1.0, column="ecg"))


def peripheral_branch(window_s: float) -> Branch:
    """Skin conductance, plethysmograph, respiration, temperature: 200 Hz, unfiltered (the tonic
    level is the signal), in the file's units, patches of 1 s."""
    return Branch("peripheral", PERIPHERAL_TYPES, (AroundMean(Resample(200.0)),),
                  PatchWindows(window_s=window_s, patch_s=1.0, column="peripheral"))


BRANCHES = {"eeg": cbramod_branch, "ecg": ecg_branch, "peripheral": peripheral_branch}
