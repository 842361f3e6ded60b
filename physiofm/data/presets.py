"""Presets: the recipes of the methods as typed, composable step lists.

`get_preset(name, **overrides)` builds one; every factory's keyword arguments are its knobs
(durations are configurable so that demo corpora can be short).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from physiofm.data.channels import CBRAMOD_19, DEAP_EEG_32, ECG_12, SEED_62
from physiofm.data.mne_filters import MNEResampleFilter
from physiofm.data.multimodal import BRANCHES, AlignedWindows, describe
from physiofm.data.recording import Recording
from physiofm.data.steps import (BandPass, Crop, FillAbsentChannels, Notch, RemoveBaseline, RemoveDC, RepairNaN,
                                 Resample, Scale, SelectChannels, SelectTypes, ZScoreAcrossChannels)
from physiofm.data.windows import DEFeatures, GroupWindows, PatchWindows, Windows


@dataclass(frozen=True)
class Preset:
    name: str
    steps: tuple[Callable[[Recording], Recording], ...]
    windows: Callable[[Recording], Windows]

    def __call__(self, rec: Recording) -> Windows:
        for step in self.steps:
            rec = step(rec)
        windows = self.windows(rec)
        windows.notes = list(rec.meta.get("notes", []))
        mask = rec.meta.get("channel_mask")
        present = mask if mask is not None and len(mask) == len(rec.ch_names) else [True] * len(rec.ch_names)
        windows.channels = [name for name, keep in zip(rec.ch_names, present) if keep]
        return windows

    def prepare(self) -> None:
        """Import and build what the steps need once, before the first recording (a worker's start)."""
        for step in self.steps:
            getattr(step, "prepare", lambda: None)()

    def decode_only(self, labels: list[str]) -> list[int] | None:
        """Indices of the file channels the first step keeps (None: all): readers that can decode
        only some channels (EDF/BDF) skip the others."""
        needed = getattr(self.steps[0], "needed", None) if self.steps else None
        return needed(labels) if needed else None

    @property
    def target_rate(self) -> float | None:
        """The rate the preset resamples to (None: it keeps the recording's), for the file budget."""
        for step in self.steps:
            rate = getattr(step, "sfreq", None)
            if isinstance(rate, (int, float)) and rate > 0:
                return float(rate)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [describe(s) for s in self.steps], "windows": describe(self.windows)}


def cbramod_eeg(*, sfreq: float = 200.0, band: tuple[float, float] = (0.3, 75.0), notch_hz: float = 60.0,
                min_duration_s: float = 300.0, trim_s: float = 60.0, window_s: float = 30.0,
                max_abs_uv: float = 100.0, precision: str = "float32") -> Preset:
    """CBraMod pretraining (TUEG), as the official code: 19 channels; recordings < 300 s dropped; on
    the whole recording MNE's resampling to 200 Hz, FIR band-pass 0.3-75 Hz and FIR notch 60 Hz
    (fused, `MNEResampleFilter`); then 60 s trimmed at both ends (kept windows never see an edge),
    µV/100, 30-s windows < 100 µV. The DC goes first (`RemoveDC`'s line, fused into the filters'
    padding pass): the zero-phase FIR high-pass removes a DC offset and a linear drift exactly, so it
    changes nothing away from the edges, but a recording shorter than the filters is all edge."""
    return Preset("cbramod-eeg", (
        SelectChannels(CBRAMOD_19, kind="eeg", missing="reject"),
        RepairNaN(),
        Crop(min_duration_s=min_duration_s),
        MNEResampleFilter(sfreq, *band, notch=() if notch_hz is None else (notch_hz,), precision=precision,
                          remove_dc_s=RemoveDC.edge_s),
        Crop(trim_s=trim_s),
        Scale("uV", factor=0.01, types=("eeg",)),
    ), PatchWindows(window_s=window_s, patch_s=1.0, max_abs=max_abs_uv * 0.01, amplitude_unit=("µV", 100.0)))


def ecg(*, sfreq: float = 200.0, band: tuple[float, float] = (0.5, 45.0), notch_hz: float = 50.0,
        window_s: float = 10.0, missing: str = "zero_fill", min_duration_s: float = 0.0,
        max_abs_mv: float | None = 10.0, min_peak_mv: float | None = 0.05) -> Preset:
    """ECG dual-masking recipe: 12 leads in canonical order, 200 Hz, 0.5-45 Hz, mains notch, mV,
    10-s windows; absent leads zero-filled and flagged in `channel_mask`.

    Plausibility in mV, as the EEG recipe's 100 µV: a window's peak over its leads must lie in
    [`min_peak_mv`, `max_abs_mv`) (R waves are ~0.5-3 mV; 200x too large is an uncalibrated gain,
    1000x too small a unit of µV written for mV). None turns a bound off."""
    return Preset("ecg", (
        SelectChannels(ECG_12, kind="ecg", missing=missing),
        RepairNaN(),
        Crop(min_duration_s=min_duration_s),
        RemoveDC(),
        Resample(sfreq),
        BandPass(*band),
        Notch(notch_hz),
        Scale("mV", factor=1.0, types=("ecg",)),
        FillAbsentChannels(),
    ), PatchWindows(window_s=window_s, patch_s=1.0, max_abs=max_abs_mv, mask_column="channel_mask",
                    min_peak=min_peak_mv, amplitude_unit=("mV", 1.0)))


def scmm_de(*, channels: str = "seed62", sfreq: float = 200.0, window_s: float = 1.0) -> Preset:
    """SCMM input: DE of 5 bands per channel over 1-s windows at 200 Hz, (62, 5) or DEAP's (32, 5)."""
    names = {"seed62": SEED_62, "deap32": tuple(c.upper() for c in DEAP_EEG_32)}
    if channels not in names:
        raise ValueError(f"channels must be one of {sorted(names)}, got {channels!r}")
    return Preset("scmm-de" if channels == "seed62" else "scmm-de-deap32", (
        SelectChannels(names[channels], kind="eeg", missing="reject"),
        RepairNaN(),
        Resample(sfreq),
        Scale("uV", factor=1.0, types=("eeg",)),
    ), DEFeatures(window_s=window_s))


def physiosync(*, sfreq: float = 128.0, window_s: float = 5.0, baseline_segment_s: float = 1.0,
               peripheral_types: tuple[str, ...] = ("gsr", "ecg")) -> Preset:
    """PhysioSync: EEG + peripheral at 128 Hz, DEAP-style baseline removal, EEG z-scored across
    channels per sample, 5-s windows → `eeg` (C, 640) and `peripheral` (C_per, 640)."""
    return Preset("physiosync", (
        SelectTypes(("eeg", *peripheral_types)),
        RepairNaN(),
        Resample(sfreq),
        RemoveBaseline(baseline_segment_s),
        ZScoreAcrossChannels(("eeg",)),
    ), GroupWindows(window_s=window_s, groups=(("eeg", ("eeg",)), ("peripheral", tuple(peripheral_types)))))


def emotion(*, modalities: tuple[str, ...] = ("eeg",), window_s: float = 4.0, eeg_channels: tuple[str, ...] = (),
            notch_hz: float = 50.0) -> Preset:
    """Fine-tuning windows for patch encoders: aligned columns `eeg` (CBraMod's recipe), `ecg` (the
    ECG encoder's) and `peripheral` (GSR, PPG, respiration, temperature), each (C, N, 200) with
    N = `window_s`; NaN repaired once, at the native rate, before the branches part."""
    unknown = [m for m in modalities if m not in BRANCHES]
    if not modalities or unknown:
        raise ValueError(f"modalities must be among {sorted(BRANCHES)}, got {list(modalities)}")
    branches = tuple(BRANCHES["eeg"](window_s, tuple(eeg_channels), notch_hz) if m == "eeg" else
                     BRANCHES[m](window_s, notch_hz) if m == "ecg" else BRANCHES[m](window_s) for m in modalities)
    return Preset("emotion", (RepairNaN(),), AlignedWindows(branches))


PRESETS: dict[str, Callable[..., Preset]] = {
    "cbramod-eeg": cbramod_eeg,
    "ecg": ecg,
    "scmm-de": scmm_de,
    "scmm-de-deap32": lambda **kw: scmm_de(channels="deap32", **kw),
    "physiosync": physiosync,
    "emotion": emotion,
}
MODALITY_PRESETS = {"eeg": "cbramod-eeg", "ecg": "ecg"}


def get_preset(preset: str | Preset, **overrides: Any) -> Preset:
    if isinstance(preset, Preset):
        if overrides:
            raise ValueError("overrides apply to preset names, not to a built Preset")
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[preset](**overrides)
