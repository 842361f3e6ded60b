"""WFDB records (`.hea` + `.dat`/`.mat`/FLAC/more signal files, multi-frequency, multi-segment)
through wfdb, checked against the header's own text (`wfdb_header`).

A multi-segment record is read through its master header: every continuous run of segments (no
`~` gap between them, the same signals) becomes one recording, a trial of the master's record with
the master's identity and its start in the record (`meta["offset_s"]`); gaps are absent data, never
samples. Segment and layout headers are parts of their master, never records of their own.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb

from physiofm.data.budget import DeclaredSignal, FileBudget
from physiofm.data.channels import type_from_label
from physiofm.data.readers.resampling import resample_marking_invalid
from physiofm.data.readers.wfdb_header import (BYTES_PER_SAMPLE, FLAC_FORMATS, WfdbHeader, named_files, parse_header,
                                               read_text)
from physiofm.data.recording import Recording, RecordingRejected, error_text

# MIMIC-IV-ECG: files/pNNNN/p{subject}/s{study}/{record}.hea
_MIMIC = re.compile(r"/(?P<subject>p\d{6,})/(?P<session>s\d{6,})/[^/]+$")
DEFAULT_UNITS = "mV"  # the specification's unit where a signal line gives none


def signal_files(header_path: str) -> list[str]:
    """Base names of the files a header names besides itself (signal files; segment headers)."""
    files, segments = named_files(read_text(header_path))
    return sorted(set(files) | {f"{name}.hea" for name in segments})


def read_wfdb(header_path: str, source: str, budget: FileBudget | None = None) -> list[Recording]:
    """The record in physical units; channels at lower rates are resampled to the highest. What
    the headers declare (rates, lengths, against the files' sizes) is checked against `budget`
    before any sample is decoded."""
    budget = budget or FileBudget()
    header = parse_header(header_path)
    if header.is_layout:
        raise RecordingRejected(
            f"layout header of a multi-segment record ({len(header.signals)} signal names and gains for its "
            "segments, no samples of its own): the record is read through its master header, which names this "
            "file as its first segment", "layout_header")
    dataset, subject, session = _identity(source, header.record_name)
    if header.is_multi_segment:
        return _read_segments(header, header_path, source, dataset, subject, session, budget)
    if not header.n_sig:
        raise RecordingRejected("no signal: the WFDB header declares 0 signals", "no_signal")
    data, notes, meta = _read_record(header_path, header, budget)
    meta["notes"] = notes
    meta["record_duration_s"] = data.shape[1] / _top_rate(header)
    return [_recording(data, header, source, dataset, subject, session, meta)]


def _recording(data: np.ndarray, header: WfdbHeader, source: str, dataset: str, subject: str, session: str,
               meta: dict, trial: str = "") -> Recording:
    names = [s.description or f"signal {s.index}" for s in header.signals]
    rates = [header.fs * s.samps_per_frame for s in header.signals]
    return Recording(
        data=data, ch_names=names, ch_types=[type_from_label(name) for name in names],
        units=[s.units or DEFAULT_UNITS for s in header.signals], sfreq=float(max(rates)), source=source,
        dataset=dataset, subject=subject, session=session, trial=trial, meta={"format": "wfdb", **meta},
        native_rates=[float(rate) for rate in rates] if len(set(rates)) > 1 else None,
    )


def _top_rate(header: WfdbHeader) -> float:
    return header.fs * max(s.samps_per_frame for s in header.signals)


def _read_record(header_path: str, header: WfdbHeader, budget: FileBudget) -> tuple[np.ndarray, list[str], dict]:
    """(data at the highest rate, notes, meta) of a single-segment record, every field checked."""
    _check_signal_files(header_path, header)
    if any(s.fmt in FLAC_FORMATS for s in header.signals):  # compressed: what it inflates to, before wfdb decodes it
        _check_budget(header_path, header, budget, rates=False)
    try:
        record = wfdb.rdrecord(header_path[: -len(".hea")], smooth_frames=False)
    except Exception as error:  # noqa: BLE001 - the header and file sizes are checked: this is the data
        _check_read_as_written(header_path, header, _wfdb_header(header_path))  # unless wfdb misread the header
        formats = sorted({s.fmt for s in header.signals})
        raise RecordingRejected(f"WFDB signal file(s) {header.signal_files()} cannot be decoded as format "
                                f"{'/'.join(formats)}: {error_text(error)}", "unreadable")
    misread = _check_read_as_written(header_path, header, record)  # the fields wfdb decoded with
    _check_budget(header_path, header, budget)  # before any resampling: rates, upsampling, bytes
    notes, meta = misread, {"comments": list(record.comments or [])}
    spf = [s.samps_per_frame for s in header.signals]
    data, native_nan = _to_highest_rate(record.e_p_signal, spf)
    expected = (record.sig_len if header.sig_len is None else header.sig_len) * max(spf)
    if data.shape[1] != expected:
        raise RecordingRejected(f"truncated WFDB record: header declares {expected} samples, read {data.shape[1]}",
                                "truncated")
    meta["nan_samples"] = native_nan
    top = _top_rate(header)
    resampled = {s.description or f"signal {s.index}": f"{header.fs * s.samps_per_frame:g} Hz -> {top:g} Hz"
                 for s in header.signals if s.samps_per_frame != max(spf)}
    if resampled:
        meta["resampled"] = resampled
        notes.append(f"multi-frequency record: {len(resampled)} signal(s) resampled to {top:g} Hz at reading "
                     f"({', '.join(f'{k} {v}' for k, v in list(resampled.items())[:6])})")
    if header.fs_text is None:
        notes.append(f"no sampling frequency on the record line: the specification's default {header.fs:g} Hz assumed")
    no_units = [s.description or f"signal {s.index}" for s in header.signals if s.units is None]
    if no_units:
        notes.append(f"units absent for {no_units[:8]}{' ...' if len(no_units) > 8 else ''}: "
                     f"the specification's default {DEFAULT_UNITS} assumed")
    unusable = {s.description or f"signal {s.index}":
                f"uncalibrated: ADC gain {'absent' if s.gain is None else '0'} on {s.where()} of "
                f"{Path(header_path).name} (wfdb would assume 200 adu per {s.units or DEFAULT_UNITS})"
                for s in header.signals if not s.calibrated}
    if unusable:
        meta["unusable"] = unusable
        notes.append(f"uncalibrated signals (ADC gain 0 or absent), not used: {list(unusable)[:8]}")
    unnamed = [s.index for s in header.signals if not s.description]
    if unnamed:
        meta["unnamed"] = len(unnamed) == len(header.signals)
        notes.append(f"{len(unnamed)} of {len(header.signals)} signals have no description (name) in the header")
    return data, notes, meta


def _check_signal_files(header_path: str, header: WfdbHeader) -> None:
    """Every signal file present and as long as the header says, before decoding anything."""
    folder = Path(header_path).parent
    for name in header.signal_files():
        signals = [s for s in header.signals if s.file_name == name]
        path = folder / name
        if not path.exists():
            raise RecordingRejected(f"WFDB signal file {name} (named on line {signals[0].line} of "
                                    f"{Path(header_path).name}) is missing", "missing_file")
        fmt = signals[0].fmt
        if header.sig_len is None or fmt in FLAC_FORMATS or fmt not in BYTES_PER_SAMPLE:
            continue
        samples = header.sig_len * sum(s.samps_per_frame for s in signals)
        needed = signals[0].byte_offset + math.ceil(samples * BYTES_PER_SAMPLE[fmt])
        size = path.stat().st_size
        if size < needed:
            raise RecordingRejected(
                f"truncated WFDB signal file {name}: {size} bytes, but {header.sig_len} frames of "
                f"{len(signals)} signal(s) in format {fmt} need {needed}", "truncated")


def _record_bytes(header_path: str, header: WfdbHeader) -> int:
    """Bytes on disk of a single-segment record: its header and the signal files present."""
    folder = Path(header_path).parent
    files = [Path(header_path), *(folder / name for name in header.signal_files())]
    return sum(path.stat().st_size for path in files if path.exists())


def _frames(header_path: str, header: WfdbHeader) -> int | None:
    """Frames of the record: as declared, else as many as its first signal file holds (None: unknown)."""
    if header.sig_len is not None:
        return header.sig_len
    names = header.signal_files()
    if not names:
        return None
    signals = [s for s in header.signals if s.file_name == names[0]]
    if signals[0].fmt not in BYTES_PER_SAMPLE:
        return None  # FLAC: its length is inside the compressed stream
    per_frame = sum(s.samps_per_frame for s in signals) * BYTES_PER_SAMPLE[signals[0].fmt]
    size = (Path(header_path).parent / names[0]).stat().st_size - signals[0].byte_offset
    return max(0, int(size // per_frame)) if per_frame else None


def _check_budget(header_path: str, header: WfdbHeader, budget: FileBudget, rates: bool = True) -> None:
    frames = _frames(header_path, header)
    what = f"WFDB header {Path(header_path).name}"
    if not rates:
        needed = 8.0 * (frames or 0) * sum(s.samps_per_frame for s in header.signals)
        budget.check_bytes(what, _record_bytes(header_path, header), needed,
                           f"{header.n_sig} signal(s) x {frames} frames, compressed")
        return
    signals = [DeclaredSignal(s.description or f"signal {s.index}", type_from_label(s.description or ""),
                              header.fs * s.samps_per_frame, (frames or 0) * s.samps_per_frame)
               for s in header.signals]
    budget.check(what, _record_bytes(header_path, header), signals, read_rate_hz=_top_rate(header),
                 duration_s=(frames or 0) / header.fs)


def _wfdb_header(header_path: str):
    try:
        return wfdb.rdheader(header_path[: -len(".hea")])
    except Exception as error:  # noqa: BLE001 - a text the specification allows but wfdb refuses
        raise RecordingRejected(f"WFDB header {Path(header_path).name} is refused by wfdb: {error_text(error)}",
                                "header_field")


def _check_read_as_written(header_path: str, header: WfdbHeader, read) -> list[str]:
    """Reject where wfdb's parse of the header (`read`, a wfdb Record) differs from the header's
    text in a field that changes the samples; notes where it differs in a name or a unit (the
    header's text is used)."""
    notes: list[str] = []
    name = Path(header_path).name
    if header.fs_text is not None and not math.isclose(float(read.fs), header.fs, rel_tol=1e-9):
        raise RecordingRejected(f"WFDB header {name}: line {header.record_line} (record line): sampling frequency "
                                f"{header.fs_text!r} ({header.fs:g} Hz) is read by wfdb as {float(read.fs):g} Hz",
                                "header_field")
    if header.sig_len is not None and read.sig_len != header.sig_len:
        raise RecordingRejected(f"WFDB header {name}: line {header.record_line} (record line): number of samples "
                                f"{header.sig_len} is read by wfdb as {read.sig_len}", "header_field")
    for s in header.signals:
        i = s.index
        pairs = [("format", s.fmt, read.fmt[i]), ("samples per frame", s.samps_per_frame, read.samps_per_frame[i]),
                 ("skew", s.skew, read.skew[i] or 0), ("byte offset", s.byte_offset, read.byte_offset[i] or 0),
                 ("baseline", s.expected_baseline, read.baseline[i])]
        if s.calibrated:
            pairs.append(("ADC gain", s.gain, read.adc_gain[i]))
        for field, written, got in pairs:
            same = math.isclose(float(written), float(got), rel_tol=1e-9) if isinstance(written, float) else \
                str(written) == str(got)
            if not same:
                raise RecordingRejected(f"WFDB header {name}: {s.where()}: {field} {written!r} is read by wfdb as "
                                        f"{got!r}", "header_field")
        # Names and units do not change the samples: the header's text is used, the difference noted.
        for field, written, got in (("units", s.units, read.units[i]), ("description", s.description, read.sig_name[i])):
            if written is not None and written != (got or "").strip():
                notes.append(f"{s.where()}: {field} {written!r} as written (wfdb reads {got!r})")
    return notes


def _read_segments(master: WfdbHeader, header_path: str, source: str, dataset: str, subject: str,
                   session: str, budget: FileBudget) -> list[Recording]:
    folder = Path(header_path).parent
    name = Path(header_path).name
    read = _wfdb_header(header_path)
    if master.fs_text is not None and not math.isclose(float(read.fs), master.fs, rel_tol=1e-9):
        raise RecordingRejected(f"WFDB header {name}: line {master.record_line} (record line): sampling frequency "
                                f"{master.fs_text!r} ({master.fs:g} Hz) is read by wfdb as {float(read.fs):g} Hz",
                                "header_field")
    names = master.segment_names()
    missing = [f"{n}.hea" for n in names if not (folder / f"{n}.hea").exists()]
    if missing:
        raise RecordingRejected(f"multi-segment record {master.record_name}: {len(missing)} of {len(names)} segment "
                                f"headers missing beside {name} ({', '.join(missing[:5])}"
                                f"{', ...' if len(missing) > 5 else ''})", "missing_file")
    _check_segments_budget(master, header_path, budget)
    pieces, start, gaps, layout = [], 0, 0, 0
    for segment in master.segments:
        if segment.name == "~":
            gaps += segment.length
        elif segment.length == 0:
            layout += 1  # the layout header (MIMIC-style variable layout): names and gains, no samples
        else:
            segment_path = str(folder / f"{segment.name}.hea")
            part = parse_header(segment_path)
            if part.is_multi_segment or not part.signals:
                raise RecordingRejected(f"multi-segment record {master.record_name}: segment {segment.name} (line "
                                        f"{segment.line} of {name}) is not a single-segment record", "header_field")
            if not math.isclose(part.fs, master.fs, rel_tol=1e-9):
                raise RecordingRejected(f"multi-segment record {master.record_name}: segment {segment.name} is at "
                                        f"{part.fs:g} Hz, its master {name} at {master.fs:g} Hz", "header_field")
            if part.sig_len is not None and part.sig_len != segment.length:
                raise RecordingRejected(f"multi-segment record {master.record_name}: segment {segment.name} holds "
                                        f"{part.sig_len} samples, line {segment.line} of {name} says {segment.length}",
                                        "header_field")
            data, notes, meta = _read_record(segment_path, part, budget)
            pieces.append((start, segment, part, data, notes, meta))
        start += segment.length
    if not pieces:
        raise RecordingRejected(f"no signal: multi-segment record {master.record_name} holds only gaps", "no_signal")
    runs: list[list] = []
    for piece in pieces:
        previous = runs[-1][-1] if runs else None
        if previous and previous[0] + previous[1].length == piece[0] and _layout_key(previous[2]) == _layout_key(piece[2]):
            runs[-1].append(piece)
        else:
            runs.append([piece])
    span_s = (master.sig_len if master.sig_len is not None else start) / master.fs
    summary = (f"multi-segment record: {len(pieces)} segment(s){f', {layout} layout header' if layout else ''}, "
               f"{gaps / master.fs:.1f} s of gaps; read as {len(runs)} continuous run(s), each a trial of this record "
               "(gaps are absent data)")
    recordings = []
    for run in runs:
        first_start, first_segment, part = run[0][0], run[0][1], run[0][2]
        notes = [summary] if not recordings else []
        for piece in run:
            notes += [f"segment {piece[1].name}: {note}" for note in piece[4]]
        meta = {"comments": run[0][5]["comments"], "offset_s": first_start / master.fs,
                "segments": [piece[1].name for piece in run], "record_duration_s": span_s,
                "nan_samples": sum(piece[5]["nan_samples"] for piece in run), "notes": notes}
        for key in ("resampled", "unusable", "unnamed"):
            if key in run[0][5]:
                meta[key] = run[0][5][key]
        data = np.concatenate([piece[3] for piece in run], axis=1)
        recordings.append(_recording(data, part, source, dataset, subject, session, meta,
                                     trial=first_segment.name))
    return recordings


def _check_segments_budget(master: WfdbHeader, header_path: str, budget: FileBudget) -> None:
    """The samples all segments declare together, against the bytes of the distinct files they are
    read from: a master that names one segment thousands of times declares far more than it holds."""
    folder = Path(header_path).parent
    parts: dict[str, WfdbHeader] = {}
    needed = 0.0
    for segment in master.segments:
        if segment.name == "~" or segment.length == 0:
            continue
        if segment.name not in parts:
            parts[segment.name] = parse_header(str(folder / f"{segment.name}.hea"))
        part = parts[segment.name]
        needed += 8.0 * segment.length * max((s.samps_per_frame for s in part.signals), default=1) * len(part.signals)
    on_disk = Path(header_path).stat().st_size + sum(_record_bytes(str(folder / f"{name}.hea"), part)
                                                     for name, part in parts.items())
    if budget.target_rate_hz and master.fs:
        needed *= max(1.0, budget.target_rate_hz / master.fs)
    budget.check_bytes(f"multi-segment record {master.record_name} ({len(master.segments)} segments, "
                       f"{len(parts)} distinct)", on_disk, needed)


def _layout_key(header: WfdbHeader) -> tuple:
    return tuple((s.description, s.units, s.samps_per_frame, s.calibrated) for s in header.signals)


def _to_highest_rate(signals: list[np.ndarray], samps_per_frame: list[int]) -> tuple[np.ndarray, int]:
    """(channels at the highest rate, invalid samples counted at each channel's own rate).

    Invalid (NaN) samples are filled at the native rate before resampling and marked again at the
    positions they cover afterwards: resampling never spreads them (a 4-sample gap stays 4 samples
    of its channel's time)."""
    top = max(samps_per_frame)
    out, invalid_total = [], 0
    for signal, spf in zip(signals, samps_per_frame):
        invalid = ~np.isfinite(signal)
        invalid_total += int(invalid.sum())
        ratio = Fraction(top, spf)
        if ratio == 1:
            out.append(signal)
            continue
        out.append(resample_marking_invalid(signal, ratio.numerator, ratio.denominator))
    return np.ascontiguousarray(np.stack(out), dtype=np.float64), invalid_total


def _identity(source: str, record_name: str) -> tuple[str, str, str]:
    """(dataset, subject, session) from the path layouts of MIMIC-IV-ECG and PTB-XL."""
    path = source.replace("\\", "/")
    match = _MIMIC.search(path)
    if match:
        return "mimic-iv-ecg", match["subject"], match["session"]
    dataset = "ptbxl" if re.search(r"/records(100|500)/", path) else "wfdb"
    return dataset, Path(record_name).name, ""
