"""EDF, EDF+ and BDF through MNE."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import mne
import numpy as np

from physiofm.data.channels import type_from_label
from physiofm.data.recording import Recording, RecordingRejected

# TUEG names files `{subject}_{session}_{token}.edf` (e.g. aaaaaaaa_s001_t000.edf).
_TUEG_NAME = re.compile(r"^(?P<subject>[a-z]{8})_(?P<session>s\d{3})_(?P<trial>t\d{3})$")
_MNE_TYPES = {"eeg": "eeg", "ecg": "ecg", "eog": "eog", "emg": "emg", "stim": "stim",
              "resp": "resp", "bio": "misc", "misc": "misc", "temperature": "temp", "gsr": "gsr"}


def read_edf(path: str, source: str, kind: str = "edf") -> list[Recording]:
    """One recording in physical units (V for voltage channels); `kind` is 'edf' or 'bdf'."""
    reader = {"edf": mne.io.read_raw_edf, "bdf": mne.io.read_raw_bdf}[kind]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = reader(path, preload=True, verbose="warning")
        except Exception as error:  # noqa: BLE001 - any parse failure is a rejection reason
            raise RecordingRejected(f"not a readable {kind.upper()} file: {type(error).__name__}: {error}")
    notes = [str(w.message) for w in caught]
    size_mismatch = [n for n in notes if "does not match the file size" in n]
    if size_mismatch:
        raise RecordingRejected(f"truncated {kind.upper()} file: {size_mismatch[0]}")
    if len(raw.ch_names) == 0:
        try:
            n_annotations = len(mne.read_annotations(path))
        except Exception:  # noqa: BLE001 - the count only decorates the reason
            n_annotations = len(raw.annotations)
        raise RecordingRejected(
            f"no signal: EDF+ with annotations only ({n_annotations} annotations, 0 signal channels)"
        )
    mne_types = raw.get_channel_types()
    ch_types = [type_from_label(name, _MNE_TYPES.get(t, "misc")) for name, t in zip(raw.ch_names, mne_types)]
    units = ["V" if ch["unit"] == mne.io.constants.FIFF.FIFF_UNIT_V else "NU" for ch in raw.info["chs"]]
    identity = _identity(Path(path).stem)
    meta = {"format": kind, "warnings": [n for n in notes if "sampling rate" in n.lower()]}
    if raw.info["meas_date"] is not None:
        meta["start"] = raw.info["meas_date"].isoformat()
    return [Recording(
        data=raw.get_data().astype(np.float64, copy=False),
        ch_names=list(raw.ch_names), ch_types=ch_types, units=units,
        sfreq=float(raw.info["sfreq"]), source=source, dataset="tueg" if identity[2] else kind,
        subject=identity[0], session=identity[1], trial=identity[2], meta=meta,
    )]


def _identity(stem: str) -> tuple[str, str, str]:
    match = _TUEG_NAME.match(stem)
    if match:
        return match["subject"], match["session"], match["trial"]
    return stem, "", ""
