"""EDF, EDF+ and BDF through MNE, checked against the file's own header (`edf_header`).

MNE's warnings about a file go into the recording's notes; what they say is unusable (a physical
range that is undefined, a record duration of 0) is rejected or left out by name. An EDF+D
(discontinuous) file is read per continuous part, each a trial of the file starting at its onset,
never glued over its gaps.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import mne
import numpy as np

from physiofm.data.budget import DeclaredSignal, FileBudget
from physiofm.data.channels import type_from_label
from physiofm.data.readers.edf_header import continuous_runs, parse_edf_header, record_onsets
from physiofm.data.recording import Recording, RecordingRejected, error_text

# TUEG names files `{subject}_{session}_{token}.edf` (e.g. aaaaaaaa_s001_t000.edf).
_TUEG_NAME = re.compile(r"^(?P<subject>[a-z]{8})_(?P<session>s\d{3})_(?P<trial>t\d{3})$")
_MNE_TYPES = {"eeg": "eeg", "ecg": "ecg", "eog": "eog", "emg": "emg", "stim": "stim",
              "resp": "resp", "bio": "misc", "misc": "misc", "temperature": "temp", "gsr": "gsr"}
MAX_NOTE_CHARS = 300


def read_edf(path: str, source: str, kind: str = "edf",
             decode_only: Callable[[list[str]], list[int] | None] | None = None,
             budget: FileBudget | None = None) -> list[Recording]:
    """Recordings in physical units (V for voltage channels); `kind` is 'edf' or 'bdf'.

    `decode_only(labels)` may name the indices of the only channels to decode (None: all); the
    file's full channel list stays in `meta["file_channels"]`. What the channels to decode declare
    (their rates, MNE's reading rate, their length) is checked against `budget` first.
    """
    header = parse_edf_header(path, kind)
    name = kind.upper()
    if not header.data_signals:
        raise RecordingRejected(
            f"no signal: EDF+ with annotations only ({_count_annotations(path)} annotations, 0 signal channels)",
            "no_signal")
    reader = {"edf": mne.io.read_raw_edf, "bdf": mne.io.read_raw_bdf}[kind]
    records = header.records_in_file if header.n_records < 0 else header.n_records
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = reader(path, preload=False, verbose="warning")
            file_channels = list(raw.ch_names)
            picks = decode_only(file_channels) if decode_only else None
            keep = list(range(len(file_channels))) if picks is None else list(picks)
            sfreq = float(raw.info["sfreq"])
            if len(file_channels) == len(header.data_signals):
                _check_budget(budget or FileBudget(), header, raw, keep, records)
            samples = min(raw.n_times, int(round(records * header.record_s * sfreq)))
            data = raw.get_data(picks=keep, stop=samples).astype(np.float64, copy=False)
        except RecordingRejected:
            raise
        except Exception as error:  # noqa: BLE001 - the header is checked: what is left is MNE's to say
            raise RecordingRejected(f"not a readable {name} file (MNE: {error_text(error)})", "unreadable")
    notes = []
    for message in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        notes.append(f"MNE: {message[:MAX_NOTE_CHARS]}")
    if len(file_channels) != len(header.data_signals):
        raise RecordingRejected(f"MNE read {len(file_channels)} signals of the {len(header.data_signals)} the {name} "
                                "header declares", "unreadable")
    if header.n_records < 0:
        notes.append(f"the header's number of data records is -1 (not stopped properly): {records} read from the "
                     "file size")
    elif header.records_in_file > header.n_records:
        notes.append(f"{header.records_in_file - header.n_records} data record(s) beyond the {header.n_records} the "
                     "header declares: left out")
    mne_types = raw.get_channel_types()
    names = [file_channels[i] for i in keep]
    ch_types = [type_from_label(file_channels[i], _MNE_TYPES.get(mne_types[i], "misc")) for i in keep]
    units = ["V" if raw.info["chs"][i]["unit"] == mne.io.constants.FIFF.FIFF_UNIT_V else "NU" for i in keep]
    all_rates = [header.rate(i) for i in header.data_signals]
    rates = [all_rates[i] for i in keep]
    meta = {"format": kind, "record_duration_s": data.shape[1] / sfreq, "file_channels": file_channels}
    resampled = {ch: f"{rate:g} Hz -> {sfreq:g} Hz" for ch, rate in zip(file_channels, all_rates) if rate != sfreq}
    if resampled:
        meta["resampled"] = resampled
        notes.append(f"uneven rates: {len(resampled)} signal(s) resampled to {sfreq:g} Hz by MNE at reading "
                     f"({', '.join(f'{k} {v}' for k, v in list(resampled.items())[:6])})")
    unusable = {file_channels[header.data_signals.index(i)]: why for i, why in header.unusable().items()}
    if unusable:
        meta["unusable"] = unusable
        notes.append(f"signals with an undefined scale, not used: {list(unusable)[:8]}")
    if raw.info["meas_date"] is not None:
        meta["start"] = raw.info["meas_date"].isoformat()
    subject, session, trial = _identity(Path(path).stem)
    parts = [(0, records)]
    if header.discontinuous:
        onsets = record_onsets(path, header, records)
        parts = continuous_runs(onsets, header.record_s)
        gaps = onsets[-1] + header.record_s - records * header.record_s
        notes.append(f"{name}+D (discontinuous): {len(parts)} continuous part(s), {gaps:.1f} s of gaps between them; "
                     "each part read as a trial of this file (gaps are absent data)")
        meta["record_duration_s"] = data.shape[1] / sfreq
    per_record = int(round(header.record_s * sfreq))
    recordings = []
    for k, (first, end) in enumerate(parts):
        part_meta = {**meta, "notes": notes if k == 0 else []}
        if header.discontinuous:
            part_meta["offset_s"] = float(onsets[first])
        recordings.append(Recording(
            data=np.ascontiguousarray(data[:, first * per_record:end * per_record]), ch_names=list(names),
            ch_types=ch_types, units=units, sfreq=sfreq, source=source, dataset="tueg" if trial else kind,
            subject=subject, session=session, trial=(f"{trial}.part{k + 1}" if trial else f"part{k + 1}") if len(parts) > 1 else trial,
            meta=part_meta, native_rates=rates if any(rate != sfreq for rate in rates) else None,
        ))
    return recordings


def _check_budget(budget: FileBudget, header, raw, keep: list[int], records: int) -> None:
    """What decoding `keep` would allocate, from the header: each signal's rate and length, MNE's
    reading rate (the highest of the file's signals, every decoded one is brought to it)."""
    types = raw.get_channel_types()
    signals = []
    for i in keep:
        signal = header.data_signals[i]
        label = raw.ch_names[i]
        signals.append(DeclaredSignal(label, type_from_label(label, _MNE_TYPES.get(types[i], "misc")),
                                      header.rate(signal), records * header.samples[signal]))
    what = (f"{header.kind.upper()} header ({records} data records of {header.record_s:g} s, "
            f"{len(header.data_signals)} signals)")
    budget.check(what, header.file_bytes, signals, read_rate_hz=float(raw.info["sfreq"]),
                 duration_s=records * header.record_s)


def _count_annotations(path: str) -> int:
    try:
        return len(mne.read_annotations(path))
    except Exception:  # noqa: BLE001 - the count only decorates the reason
        return 0


def _identity(stem: str) -> tuple[str, str, str]:
    match = _TUEG_NAME.match(stem)
    if match:
        return match["subject"], match["session"], match["trial"]
    return stem, "", ""

