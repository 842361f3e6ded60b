"""WFDB records (`.hea` + `.dat`/`.mat`/more signal files, multi-frequency) through wfdb."""
from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import resample_poly

from physiofm.data.channels import type_from_label
from physiofm.data.recording import Recording, RecordingRejected

# MIMIC-IV-ECG: files/pNNNN/p{subject}/s{study}/{record}.hea
_MIMIC = re.compile(r"/(?P<subject>p\d{6,})/(?P<session>s\d{6,})/[^/]+$")


def signal_files(header_path: str) -> list[str]:
    """Base names of the signal files a header refers to (the files a record needs besides it)."""
    header = _read_header(header_path)
    names = list(header.file_name or [])
    for segment in getattr(header, "seg_name", None) or []:
        if segment and segment != "~":
            names.append(f"{segment}.hea")
    return sorted(set(names))


def read_wfdb(header_path: str, source: str) -> list[Recording]:
    """The record in physical units; channels at different rates are resampled to the highest."""
    record_name = header_path[: -len(".hea")]
    try:
        record = wfdb.rdrecord(record_name, smooth_frames=False)  # one header parse, any rates
    except Exception as error:  # noqa: BLE001 - any decode failure is a rejection reason
        header = _read_header(header_path)  # a header that does not parse gets its own reason
        sizes = ", ".join(f"{name}: {_size(Path(header_path).with_name(name))}" for name in sorted(set(header.file_name)))
        raise RecordingRejected(
            f"WFDB signal unreadable (truncated or corrupt? {sizes}; "
            f"header declares {header.sig_len} samples x {header.n_sig} signals): {type(error).__name__}: {error}"
        )
    if not record.n_sig:
        raise RecordingRejected("no signal: the WFDB header declares 0 signals")
    rates = [record.fs * spf for spf in record.samps_per_frame]
    sfreq = max(rates)
    data = _to_highest_rate(record.e_p_signal, record.samps_per_frame)
    meta = {"format": "wfdb", "comments": list(record.comments or [])}
    if len(set(rates)) > 1:
        meta["resampled"] = {name: f"{rate:g} Hz -> {sfreq:g} Hz"
                             for name, rate in zip(record.sig_name, rates) if rate != sfreq}
    expected = record.sig_len * max(record.samps_per_frame)
    if data.shape[1] != expected:
        raise RecordingRejected(f"truncated WFDB record: header declares {expected} samples, read {data.shape[1]}")
    meta["nan_samples"] = int(np.isnan(data).sum())
    dataset, subject, session = _identity(source, record.record_name)
    return [Recording(
        data=np.ascontiguousarray(data, dtype=np.float64), ch_names=list(record.sig_name),
        ch_types=[type_from_label(name) for name in record.sig_name],
        units=[unit or "mV" for unit in record.units], sfreq=float(sfreq), source=source,
        dataset=dataset, subject=subject, session=session, meta=meta,
    )]


def _read_header(header_path: str):
    try:
        return wfdb.rdheader(header_path[: -len(".hea")])
    except Exception as error:  # noqa: BLE001 - any parse failure is a rejection reason
        raise RecordingRejected(f"WFDB header unreadable: {type(error).__name__}: {error}")


def _size(path: Path) -> str:
    return f"{path.stat().st_size} bytes" if path.exists() else "missing"


def _to_highest_rate(signals: list[np.ndarray], samps_per_frame: list[int]) -> np.ndarray:
    top = max(samps_per_frame)
    out = []
    for signal, spf in zip(signals, samps_per_frame):
        ratio = Fraction(top, spf)
        out.append(signal if ratio == 1 else resample_poly(signal, ratio.numerator, ratio.denominator))
    return np.stack(out)


def _identity(source: str, record_name: str) -> tuple[str, str, str]:
    """(dataset, subject, session) from the path layouts of MIMIC-IV-ECG and PTB-XL."""
    path = source.replace("\\", "/")
    match = _MIMIC.search(path)
    if match:
        return "mimic-iv-ecg", match["subject"], match["session"]
    dataset = "ptbxl" if re.search(r"/records(100|500)/", path) else "wfdb"
    return dataset, Path(record_name).name, ""
