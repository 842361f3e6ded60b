"""WFDB header text parsed strictly by the format's specification (header(5)).

wfdb's own parser fills silent defaults where a field does not parse (250 Hz for a frequency of
`abc`, gain 200 for `x`) and its patterns stop early on valid numbers (`2e9` Hz reads as 2 Hz).
This parse is the header's own text; the reader checks what wfdb read against it and rejects a
record, naming the line and the field, where they disagree or a field is not what the
specification allows.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from physiofm.data.recording import RecordingRejected

# Formats wfdb reads (wfdb.io._signal.DAT_FMTS) and the bytes one sample takes in each.
BYTES_PER_SAMPLE = {"8": 1.0, "16": 2.0, "24": 3.0, "32": 4.0, "61": 2.0, "80": 1.0, "160": 2.0, "212": 1.5,
                    "310": 4 / 3, "311": 4 / 3}
FLAC_FORMATS = ("508", "516", "524")
FORMATS = (*BYTES_PER_SAMPLE, *FLAC_FORMATS, "0")  # 0: a null signal (layout headers: no samples)

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")
_COUNT = re.compile(r"^\d+$")
_NAME = re.compile(r"^[-\w]+$")
_PLAIN_FILE = re.compile(r"^[-\w.]+$")
_FORMAT = re.compile(r"^(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?$")
_GAIN = re.compile(r"^(?P<gain>[^(/]*)(?:\((?P<baseline>[^)]*)\))?(?:/(?P<units>.*))?$")
_INTEGER_FIELDS = ("ADC resolution", "ADC zero", "initial value", "checksum", "block size")


@dataclass
class SignalLine:
    line: int  # line number in the header file (1-based)
    index: int
    file_name: str
    fmt: str
    samps_per_frame: int
    skew: int
    byte_offset: int
    gain: float | None  # None: absent
    baseline: int | None
    units: str | None
    adc_zero: int | None
    description: str | None

    @property
    def calibrated(self) -> bool:
        """Gain absent or 0: the specification's 'uncalibrated' (wfdb then assumes 200 adu per unit)."""
        return self.gain is not None and self.gain != 0

    @property
    def expected_baseline(self) -> int:
        """The baseline as the specification defines it: written, else the ADC zero, else 0."""
        if self.baseline is not None:
            return self.baseline
        return self.adc_zero if self.adc_zero is not None else 0

    def where(self) -> str:
        name = f" {self.description!r}" if self.description else ""
        return f"line {self.line} (signal {self.index}{name})"


@dataclass
class Segment:
    line: int
    name: str  # "~" for a gap
    length: int


@dataclass
class WfdbHeader:
    path: str
    record_name: str
    n_sig: int
    fs_text: str | None  # the frequency as written; None when absent (the specification's 250 Hz)
    fs: float
    sig_len: int | None
    signals: list[SignalLine] = field(default_factory=list)
    segments: list[Segment] | None = None  # multi-segment records only
    record_line: int = 1

    @property
    def is_multi_segment(self) -> bool:
        return self.segments is not None

    @property
    def is_layout(self) -> bool:
        """A layout header (MIMIC-style variable-layout records): signal lines without files or samples."""
        return not self.is_multi_segment and self.sig_len == 0 and bool(self.signals) and all(
            s.file_name == "~" for s in self.signals)

    def signal_files(self) -> list[str]:
        return sorted({s.file_name for s in self.signals if s.file_name != "~"})

    def segment_names(self) -> list[str]:
        return [s.name for s in self.segments or [] if s.name != "~"]


def header_lines(text: str) -> list[tuple[int, str]]:
    """(line number, text) of the lines that hold fields: no blank or comment lines."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.strip().startswith("#")]


def read_text(path: str) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def named_files(text: str) -> tuple[list[str], list[str]]:
    """(signal files, segment record names) a header names, read leniently (for grouping a folder's
    files into records; the strict parse happens when the record is read)."""
    lines = header_lines(text)
    if not lines:
        return [], []
    first = lines[0][1].split()
    multi = "/" in first[0]
    try:
        count = int(first[0].split("/", 1)[1]) if multi else int(first[1])
    except (IndexError, ValueError):
        count = len(lines) - 1
    names = [line.split()[0] for _, line in lines[1: 1 + count]]
    plain = [name for name in names if _PLAIN_FILE.match(name) and name not in (".", "..")]  # never a path
    if multi:
        return [], [name for name in plain if _NAME.match(name)]
    return sorted(set(plain)), []


def parse_header(path: str, text: str | None = None) -> WfdbHeader:
    """The header at `path` by the specification; `RecordingRejected` (code 'header_field') naming
    the line and field where the text is not what the specification allows."""
    text = read_text(path) if text is None else text
    lines = header_lines(text)
    if not lines:
        raise _bad(path, "the header holds no record line (only blank or comment lines)")
    number, record_line = lines[0]
    tokens = record_line.split()
    where = f"line {number} (record line)"
    name_match = re.match(r"^(?P<name>[-\w]+)(?:/(?P<n_seg>.*))?$", tokens[0])
    if not name_match:
        raise _bad(path, f"{where}: record name {tokens[0]!r} is not a WFDB record name")
    if len(tokens) < 2:
        raise _bad(path, f"{where}: the number of signals is absent")
    n_sig = _count(path, where, "number of signals", tokens[1])
    fs_text = tokens[2].split("/", 1)[0].split("(", 1)[0] if len(tokens) > 2 else None
    fs = 250.0
    if fs_text is not None:
        fs = _number(path, where, "sampling frequency", fs_text)
        if not (math.isfinite(fs) and fs > 0):
            raise _bad(path, f"{where}: sampling frequency {fs_text!r} is not a positive finite number of Hz")
    sig_len = _count(path, where, "number of samples", tokens[3]) if len(tokens) > 3 else None
    header = WfdbHeader(path, name_match["name"], n_sig, fs_text, fs, sig_len, record_line=number)
    body = lines[1:]
    if name_match["n_seg"] is not None:
        n_seg = _count(path, where, "number of segments", name_match["n_seg"])
        header.segments = [_segment(path, n, line) for n, line in body[:n_seg]]
        expected, found = n_seg, len(body)
        what = "segment"
    else:
        header.signals = [_signal(path, n, index, line) for index, (n, line) in enumerate(body[:n_sig])]
        expected, found = n_sig, len(body)
        what = "signal"
    if found != expected:
        raise _bad(path, f"{where} declares {expected} {what}s; the header has {found} {what} lines")
    return header


def _segment(path: str, number: int, line: str) -> Segment:
    tokens = line.split()
    where = f"line {number} (segment)"
    if len(tokens) != 2 or not (tokens[0] == "~" or _NAME.match(tokens[0])):
        raise _bad(path, f"{where}: {line!r} is not 'record-name length' (or '~ length' for a gap)")
    return Segment(number, tokens[0], _count(path, where, "segment length", tokens[1]))


def _signal(path: str, number: int, index: int, line: str) -> SignalLine:
    parts = line.split(None, 8)
    description = parts[8].strip() if len(parts) > 8 else None
    where = f"line {number} (signal {index}{f' {description!r}' if description else ''})"
    file_name = parts[0]
    if file_name != "~" and (not _PLAIN_FILE.match(file_name) or file_name in (".", "..")):
        raise _bad(path, f"{where}: signal file name {file_name!r} is not a plain file name in the record's folder")
    if len(parts) < 2:
        raise _bad(path, f"{where}: the signal format is absent")
    fmt = _FORMAT.match(parts[1])
    if not fmt:
        raise _bad(path, f"{where}: format field {parts[1]!r} is not format[xsamples-per-frame][:skew][+byte-offset]")
    if fmt["fmt"] not in FORMATS:
        raise _bad(path, f"{where}: signal format {fmt['fmt']!r} is not a WFDB format wfdb reads (known: {list(FORMATS)})")
    gain = baseline = units = None
    if len(parts) > 2:
        fields = _GAIN.match(parts[2])
        if not fields or not fields["gain"]:
            raise _bad(path, f"{where}: ADC gain field {parts[2]!r} is not gain[(baseline)][/units]")
        gain = _number(path, where, "ADC gain", fields["gain"])
        if not math.isfinite(gain):
            raise _bad(path, f"{where}: ADC gain {fields['gain']!r} is not finite")
        if fields["baseline"] is not None:
            if not _INTEGER.match(fields["baseline"]):
                raise _bad(path, f"{where}: baseline {fields['baseline']!r} is not an integer")
            baseline = int(fields["baseline"])
        if fields["units"] is not None:
            if not fields["units"]:
                raise _bad(path, f"{where}: units after '/' are empty in {parts[2]!r}")
            units = fields["units"]
    integers = []
    for name, text in zip(_INTEGER_FIELDS, parts[3:8]):
        if not _INTEGER.match(text):
            raise _bad(path, f"{where}: {name} {text!r} is not an integer (fields shifted?)")
        integers.append(int(text))
    return SignalLine(number, index, file_name, fmt["fmt"], int(fmt["spf"] or 1), int(fmt["skew"] or 0),
                      int(fmt["offset"] or 0), gain, baseline, units, integers[1] if len(integers) > 1 else None,
                      description or None)


def _number(path: str, where: str, name: str, text: str) -> float:
    if not _NUMBER.match(text):
        raise _bad(path, f"{where}: {name} {text!r} is not a number")
    return float(text)


def _count(path: str, where: str, name: str, text: str) -> int:
    if not _COUNT.match(text):
        raise _bad(path, f"{where}: {name} {text!r} is not a whole number")
    return int(text)


def _bad(path: str, problem: str) -> RecordingRejected:
    return RecordingRejected(f"WFDB header {Path(path).name}: {problem}", "header_field")
