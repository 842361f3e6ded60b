"""What one input file may cost a worker, checked against what the file declares before anything
is decoded.

A few hundred bytes can declare gigabytes: an EDF whose records last 3000 s holds a 0.08-Hz
signal that a preset upsamples 2500 times, a pickle can ask for an uninitialised array of any
shape, a compressed `.mat` can inflate a thousandfold. Each reader states what it is about to
allocate (channels, their rates and lengths, the rate it reads at) and `FileBudget.check` compares
that, after the preset's resampling, with the file's size on disk and with configurable limits:
bytes per recording, the upsampling factor, and a plausible rate range per kind of signal. What
exceeds them is rejected (`too_large`, `sampling_rate`) before the allocation is made.

What no declaration bounds (a bug, a decoder's own appetite) is caught at run time: the pipeline's
workers stop a file that takes longer than `seconds_per_file` or makes the worker exceed its
memory limit (`pipeline.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from physiofm.data.recording import RecordingRejected, cap, short  # noqa: F401 - cap and short: part of this interface

MIB = 2**20
# Rates a recording of each kind of signal plausibly has (Hz, inclusive); other kinds use "other".
DEFAULT_RATES_HZ = {"eeg": (32.0, 100_000.0), "ecg": (32.0, 100_000.0), "other": (0.1, 100_000.0)}


@dataclass(frozen=True)
class DeclaredSignal:
    """One signal a reader is about to decode: its label, kind (eeg, ecg, ... as `type_from_label`
    says), the rate it was recorded at and how many samples it holds at that rate."""

    label: str
    kind: str
    rate_hz: float
    samples: int


@dataclass(frozen=True)
class FileBudget:
    """Limits on one file (every field is a knob of `prepare_corpus(budget=...)`).

    `max_recording_mib`: decoded samples x channels x 8 bytes (float64), at the highest rate the
    recording reaches (its reader's, or the preset's after resampling), summed over a file's trials.
    `max_expansion`: that size over the file's size on disk (EDF decodes 4x, WFDB 212 5.3x, a
    FLAC-compressed record ~20x; a zlib bomb 1000x). `max_upsampling`: a rate any step raises a
    signal by (a reader's own, or the preset's). `rates_hz`: {kind: (lowest, highest)} plausible
    recording rates. `seconds_per_file`: wall time of one file in a pipeline worker.
    `max_reason_chars`: a manifest reason or note is cut to this length.
    """

    max_recording_mib: float = 1024.0
    max_expansion: float = 64.0
    max_upsampling: float = 64.0
    rates_hz: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_RATES_HZ))
    seconds_per_file: float = 300.0
    max_reason_chars: int = 400
    target_rate_hz: float | None = None  # the preset's output rate, set by `for_preset`

    def __post_init__(self):
        for name in ("max_recording_mib", "max_expansion", "max_upsampling", "seconds_per_file"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"budget {name} must be > 0, got {value!r}")
        if self.max_reason_chars < 80:
            raise ValueError(f"budget max_reason_chars must be >= 80, got {self.max_reason_chars!r}")
        if "other" not in self.rates_hz:
            raise ValueError(f"budget rates_hz must give a range for 'other' signals, got {sorted(self.rates_hz)}")
        for kind, bounds in self.rates_hz.items():
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ValueError(f"budget rates_hz[{kind!r}] must be (lowest, highest) Hz with 0 < lowest <= "
                                 f"highest, got {bounds!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> FileBudget:
        values = dict(values or {})
        unknown = sorted(set(values) - {f for f in cls.__dataclass_fields__ if f != "target_rate_hz"})
        if unknown:
            raise ValueError(f"unknown budget setting {unknown[0]!r}; allowed: "
                             f"{sorted(f for f in cls.__dataclass_fields__ if f != 'target_rate_hz')}")
        if "rates_hz" in values:
            values["rates_hz"] = {**DEFAULT_RATES_HZ, **{k: tuple(v) for k, v in values["rates_hz"].items()}}
        return cls(**values)

    def for_preset(self, target_rate_hz: float | None) -> FileBudget:
        return replace(self, target_rate_hz=target_rate_hz)

    @property
    def max_recording_bytes(self) -> int:
        return int(self.max_recording_mib * MIB)

    def rate_range(self, kind: str) -> tuple[float, float]:
        return self.rates_hz.get(kind, self.rates_hz["other"])

    # ------------------------------------------------------------ the checks
    def check(self, what: str, file_bytes: int, signals: list[DeclaredSignal], read_rate_hz: float | None = None,
              duration_s: float | None = None) -> int:
        """Reject (`RecordingRejected`) what `signals` would make a worker allocate beyond the limits;
        returns the bytes they come to. `what` names the file for the reasons; `read_rate_hz` is the
        rate the reader outputs every signal at (None: each its own); `duration_s` the recording's
        length (default: each signal's samples over its rate)."""
        if not signals:
            return 0
        for signal in signals:
            low, high = self.rate_range(signal.kind)
            if not (math.isfinite(signal.rate_hz) and low <= signal.rate_hz <= high):
                raise RecordingRejected(
                    f"{what}: signal {short(signal.label, 40)} declares {signal.rate_hz:.6g} Hz, outside the plausible "
                    f"range of {signal.kind if signal.kind in self.rates_hz else 'other'} signals "
                    f"({low:g}-{high:g} Hz; budget rates_hz)", "sampling_rate")
        top = max(s.rate_hz for s in signals)
        read = read_rate_hz or top
        for signal in signals:
            factor = read / signal.rate_hz
            if factor > self.max_upsampling:
                raise RecordingRejected(
                    f"{what}: reading signal {short(signal.label, 40)} at {read:.6g} Hz upsamples its "
                    f"{signal.rate_hz:.6g} Hz {factor:.4g} times (limit {self.max_upsampling:g}; budget "
                    "max_upsampling)", "sampling_rate")
        target = self.target_rate_hz
        if target and target / read > self.max_upsampling:
            raise RecordingRejected(
                f"{what}: resampling {read:.6g} Hz to the preset's {target:g} Hz upsamples {target / read:.4g} times "
                f"(limit {self.max_upsampling:g}; budget max_upsampling)", "sampling_rate")
        if duration_s is None:
            duration_s = max(s.samples / s.rate_hz for s in signals)
        peak_rate = max(read, target or 0.0)
        needed = 8.0 * len(signals) * duration_s * peak_rate
        self.check_bytes(what, file_bytes, needed, f"{len(signals)} signal(s) x {duration_s:.6g} s at {peak_rate:.6g} Hz")
        return int(needed)

    def check_bytes(self, what: str, file_bytes: int, needed: float, how: str = "") -> None:
        """Reject `needed` bytes of decoded samples beyond the per-recording limit or out of
        proportion to the file's `file_bytes` on disk."""
        how = f" ({how})" if how else ""
        if needed > self.max_recording_bytes:
            raise RecordingRejected(
                f"{what}: declares {mib(needed)} of samples{how}, more than the {mib(self.max_recording_bytes)} a "
                "recording may take (budget max_recording_mib)", "too_large")
        if file_bytes > 0 and needed > self.max_expansion * file_bytes and needed > 16 * MIB:
            raise RecordingRejected(
                f"{what}: declares {mib(needed)} of samples{how} from {mib(file_bytes)} on disk, "
                f"{needed / file_bytes:.0f} times its size (limit {self.max_expansion:g}; budget max_expansion)",
                "too_large")

    def cap(self, text: str) -> str:
        return cap(text, self.max_reason_chars)


def mib(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{int(n)} bytes"
