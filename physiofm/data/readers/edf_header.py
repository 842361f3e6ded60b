"""EDF/EDF+/BDF headers read field by field (fixed-width ASCII), so that a bad file is rejected
naming the field and its bytes, and what a file declares is known before anything is decoded.

MNE reads these files, but takes a record duration of 0 for 1 s, an undefined physical range for
flat data, and reads EDF+D (discontinuous) files as if continuous; this parse is what the reader
checks MNE's result and the file's timeline against.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physiofm.data.recording import RecordingRejected

ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
# Per-signal fields: name, width in bytes (each field is stored for all signals, one after another).
_SIGNAL_FIELDS = (("label", 16), ("transducer", 80), ("physical dimension", 8), ("physical minimum", 8),
                  ("physical maximum", 8), ("digital minimum", 8), ("digital maximum", 8), ("prefiltering", 80),
                  ("samples per record", 8), ("reserved", 32))
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ONSET = re.compile(rb"^([+-]\d+(?:\.\d*)?)\x14\x14")


@dataclass
class EdfHeader:
    kind: str  # 'edf' or 'bdf'
    reserved: str  # 'EDF+C', 'EDF+D', 'BDF+C', ... or '' for plain EDF/BDF
    header_bytes: int
    n_records: int  # as declared; -1: unknown (a recording not stopped properly)
    record_s: float
    labels: list[str]
    units: list[str]
    physical_min: list[float]
    physical_max: list[float]
    digital_min: list[float]
    digital_max: list[float]
    samples: list[int]  # per data record
    file_bytes: int

    @property
    def sample_bytes(self) -> int:
        return 3 if self.kind == "bdf" else 2

    @property
    def record_bytes(self) -> int:
        return sum(self.samples) * self.sample_bytes

    @property
    def annotation_signals(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label in ANNOTATION_LABELS]

    @property
    def data_signals(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label not in ANNOTATION_LABELS]

    @property
    def discontinuous(self) -> bool:
        return self.reserved.upper().startswith(("EDF+D", "BDF+D"))

    @property
    def records_in_file(self) -> int:
        return (self.file_bytes - self.header_bytes) // self.record_bytes if self.record_bytes else 0

    def rate(self, signal: int) -> float:
        return self.samples[signal] / self.record_s

    def unusable(self) -> dict[int, str]:
        """Data signals whose physical scale is undefined: {signal index: why}."""
        out = {}
        for i in self.data_signals:
            if self.physical_min[i] == self.physical_max[i]:
                out[i] = (f"physical range undefined: minimum = maximum = {self.physical_min[i]:g} "
                          f"{self.units[i]} in the {self.kind.upper()} header (signal {i + 1})").replace("  ", " ")
            elif self.digital_min[i] >= self.digital_max[i]:
                out[i] = (f"digital range undefined: minimum {self.digital_min[i]:g} >= maximum "
                          f"{self.digital_max[i]:g} in the {self.kind.upper()} header (signal {i + 1})")
        return out


def parse_edf_header(path: str, kind: str) -> EdfHeader:
    """The header of the EDF/BDF file at `path`, every field checked; `RecordingRejected` names the
    field, its bytes and (for signal fields) the signal where one is not what the format allows."""
    name = kind.upper()
    size = Path(path).stat().st_size
    with open(path, "rb") as handle:
        fixed = handle.read(256)
        if len(fixed) < 256:
            raise RecordingRejected(f"truncated {name} file: {size} bytes, shorter than the 256-byte header",
                                    "truncated")
        version = fixed[:8]
        expected = b"\xffBIOSEMI" if kind == "bdf" else b"0       "
        if version != expected and not (kind == "edf" and version.strip() == b"0"):
            raise RecordingRejected(f"not a readable {name} file: its version field (bytes 0-7) is {version!r}, "
                                    f"{name} files begin with {expected!r}", "unreadable")
        header_bytes = _integer(fixed, 184, 8, "number of header bytes", name)
        reserved = _text(fixed, 192, 44, "reserved", name)
        n_records = _integer(fixed, 236, 8, "number of data records", name)
        record_s = _number(fixed, 244, 8, "duration of a data record", name)
        ns = _integer(fixed, 252, 4, "number of signals", name)
        if ns < 0 or n_records < -1 or not (math.isfinite(record_s) and record_s >= 0):
            bad = ("number of signals", ns) if ns < 0 else ("number of data records", n_records) if n_records < -1 \
                else ("duration of a data record", record_s)
            raise RecordingRejected(f"{name} header field '{bad[0]}' is {bad[1]:g}: out of range", "header_field")
        if ns == 0:
            raise RecordingRejected(f"no signal: the {name} header declares 0 signals", "no_signal")
        if header_bytes != 256 * (ns + 1):
            raise RecordingRejected(f"{name} header field 'number of header bytes' (bytes 184-191) is {header_bytes}; "
                                    f"{ns} signals make a header of {256 * (ns + 1)} bytes", "header_field")
        block = handle.read(256 * ns)
    if len(block) < 256 * ns:
        raise RecordingRejected(f"truncated {name} file: {size} bytes, shorter than its {256 * (ns + 1)}-byte header",
                                "truncated")
    fields, offset = {}, 0
    for field, width in _SIGNAL_FIELDS:
        values = []
        for i in range(ns):
            start = offset + i * width
            text = _text(block, start, width, field, name, absolute=256 + start, signal=i)
            values.append(text)
        fields[field] = values
        offset += width * ns
    labels = fields["label"]

    def numbers(field: str, parse) -> list:
        out = []
        for i, text in enumerate(fields[field]):
            if labels[i] in ANNOTATION_LABELS:  # their ranges only frame the annotation bytes
                out.append(float("nan"))
                continue
            out.append(parse(text, field, i))
        return out

    header = EdfHeader(
        kind=kind, reserved=reserved, header_bytes=header_bytes, n_records=n_records, record_s=record_s,
        labels=labels, units=fields["physical dimension"],
        physical_min=numbers("physical minimum", lambda t, f, i: _signal_number(t, f, i, labels, name)),
        physical_max=numbers("physical maximum", lambda t, f, i: _signal_number(t, f, i, labels, name)),
        digital_min=numbers("digital minimum", lambda t, f, i: _signal_number(t, f, i, labels, name)),
        digital_max=numbers("digital maximum", lambda t, f, i: _signal_number(t, f, i, labels, name)),
        samples=[_signal_count(t, i, labels, name) for i, t in enumerate(fields["samples per record"])],
        file_bytes=size,
    )
    if not header.data_signals:
        return header  # annotations only: the reader says so
    if record_s == 0:
        raise RecordingRejected(f"{name} header field 'duration of a data record' (bytes 244-251) is 0 s for a file of "
                                f"{len(header.data_signals)} signals: no sampling rate can be derived from it",
                                "header_field")
    found = header.records_in_file
    if n_records >= 0 and found < n_records:
        raise RecordingRejected(
            f"truncated {name} file: its header declares {n_records} data records of {header.record_bytes} bytes, "
            f"the file holds {(size - header_bytes) / header.record_bytes:.1f} ({size} bytes)", "truncated")
    if found == 0:
        raise RecordingRejected(f"no signal: the {name} file holds no complete data record ({size} bytes)", "no_signal")
    return header


def record_onsets(path: str, header: EdfHeader, n_records: int) -> np.ndarray:
    """Onset (s from the file's start) of each data record, from the time-keeping annotation each
    EDF+ record begins with."""
    if not header.annotation_signals:
        raise RecordingRejected(f"{header.kind.upper()}+D file without an annotation signal: the onsets of its "
                                "data records are unknown", "header_field")
    signal = header.annotation_signals[0]
    start = sum(header.samples[:signal]) * header.sample_bytes
    width = header.samples[signal] * header.sample_bytes
    records = np.memmap(path, dtype=np.uint8, mode="r", offset=header.header_bytes,
                        shape=(n_records, header.record_bytes))
    onsets = np.empty(n_records)
    for i in range(n_records):
        match = _ONSET.match(bytes(records[i, start:start + width]))
        if not match:
            raise RecordingRejected(f"{header.kind.upper()}+D data record {i + 1} lacks its time-keeping annotation "
                                    "(+onset followed by 0x14 0x14): the record's time is unknown", "header_field")
        onsets[i] = float(match[1])
    return onsets - onsets[0]


def continuous_runs(onsets: np.ndarray, record_s: float) -> list[tuple[int, int]]:
    """[first record, end record) of each run of records that follow each other without a gap."""
    tolerance = max(1e-6, 1e-3 * record_s)
    breaks = np.flatnonzero(np.abs(np.diff(onsets) - record_s) > tolerance) + 1
    edges = [0, *breaks.tolist(), len(onsets)]
    return list(zip(edges[:-1], edges[1:]))


def _text(raw: bytes, start: int, width: int, field: str, name: str, absolute: int | None = None,
          signal: int | None = None) -> str:
    data = raw[start:start + width]
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        try:
            text = data.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            text = ""
        if field in ("label", "transducer", "physical dimension", "prefiltering", "reserved"):
            return text.strip()  # free text: the specification's ASCII is often latin-1 in real files
        where = absolute if absolute is not None else start
        of = f" of signal {signal + 1}" if signal is not None else ""
        raise RecordingRejected(f"{name} header field '{field}'{of} (bytes {where}-{where + width - 1}) is not ASCII "
                                f"text: {data!r}", "header_field")


def _integer(raw: bytes, start: int, width: int, field: str, name: str) -> int:
    return int(_matching(raw, start, width, field, name, _INTEGER, "an integer"))


def _number(raw: bytes, start: int, width: int, field: str, name: str) -> float:
    return float(_matching(raw, start, width, field, name, _NUMBER, "a number"))


def _matching(raw: bytes, start: int, width: int, field: str, name: str, pattern: re.Pattern, what: str) -> str:
    text = _text(raw, start, width, field, name)
    if not pattern.match(text):
        raise RecordingRejected(f"{name} header field '{field}' (bytes {start}-{start + width - 1}) is not {what}: "
                                f"{raw[start:start + width]!r}", "header_field")
    return text


def _signal_number(text: str, field: str, index: int, labels: list[str], name: str) -> float:
    if not _NUMBER.match(text):
        raise RecordingRejected(f"{name} header field '{field}' of signal {index + 1} ({labels[index]!r}) is not a "
                                f"number: {text!r}", "header_field")
    return float(text)


def _signal_count(text: str, index: int, labels: list[str], name: str) -> int:
    if not _INTEGER.match(text) or int(text) <= 0:
        raise RecordingRejected(f"{name} header field 'samples per record' of signal {index + 1} ({labels[index]!r}) is "
                                f"not a positive integer: {text!r}", "header_field")
    return int(text)
