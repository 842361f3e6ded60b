"""MNE's resampling and FIR filtering (CBraMod's recipe), computed in one spectral pass.

The official CBraMod preprocessing calls, on the whole recording, `raw.resample(200)` (FFT
resampling: odd-reflection padding to a power of two, boxcar spectrum truncation),
`raw.filter(0.3, 75)` and `raw.notch_filter(60)` (zero-phase windowed-sinc FIR filters, MNE's
firwin/hamming designs and automatic lengths), then trims. All three are linear and shift
invariant away from the edges, so `MNEResampleFilter` multiplies the two filters' zero-phase
responses into the truncated spectrum of the resampler: one forward and one inverse FFT per
channel instead of a resampling and two overlap-add convolutions. The filter taps come from
`mne.filter.create_filter` itself; the output grid (padding, sub-sample offset) is MNE's.

Away from the edges (beyond the filters' half lengths, 8.8 s for 0.3-75 Hz + 60 Hz notch at
200 Hz) the result equals MNE's (relative RMS, measured: ~1e-13 in float64 with MNE's FFT length,
~1e-6 with the shorter one `resample_plan` takes where MNE's grid allows, 1e-5..1e-4 in float32); within them it differs from MNE's own edge padding (by ~1e-4 of the signal on
EEG-like data, measured), and the CBraMod recipe trims 60 s at both ends anyway. A recording
shorter than the filters is padded with zeros beyond its reflection, as MNE's filter does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Literal

import numpy as np

from physiofm.data.recording import Recording
from physiofm.data.steps import dc_line

NOTCH_TRANSITION_HZ = 1.0  # mne's notch_filter default trans_bandwidth
_BLOCK_SAMPLES = 1 << 23  # samples per FFT block of channels: bounds the scratch memory (~100 MiB in float32)
FFT_BACKENDS = ("torch", "scipy")


@dataclass(frozen=True)
class MNEResampleFilter:
    """`raw.resample(sfreq)`, `raw.filter(low, high)`, `raw.notch_filter(notch)` with MNE's defaults,
    fused into one FFT per channel (see the module docstring).

    `high=None` (or ≥ Nyquist) means high-pass only, `notch=()` no notch. `precision='float32'`
    (default) computes the FFTs in single precision: relative RMS difference to float64 ~3e-7.
    `fft='torch'` (default) runs them through torch.fft (MKL: about twice scipy's pocketfft on one
    core, measured), `'scipy'` through scipy.fft; they differ by float rounding only.
    `remove_dc_s=0.1` first subtracts `RemoveDC(0.1)`'s line (the same numbers, one pass fewer).
    """

    sfreq: float = 200.0
    low: float = 0.3
    high: float | None = 75.0
    notch: tuple[float, ...] = (60.0,)
    precision: Literal["float32", "float64"] = "float32"
    fft: Literal["torch", "scipy"] = "torch"
    remove_dc_s: float | None = None  # as `RemoveDC(edge_s)` before, fused into the padding pass

    def __post_init__(self):
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be one of ('float32', 'float64'), got {self.precision!r}")
        if self.fft not in FFT_BACKENDS:
            raise ValueError(f"fft must be one of {FFT_BACKENDS}, got {self.fft!r}")
        if isinstance(self.notch, (int, float)):
            object.__setattr__(self, "notch", (float(self.notch),))
        if not 0 < self.low < self.sfreq / 2:
            raise ValueError(f"low must be in (0, {self.sfreq / 2}) Hz (Nyquist of sfreq={self.sfreq}), got {self.low}")
        bad = [f for f in self.notch if not 0 < f < self.sfreq / 2]
        if bad:
            raise ValueError(f"notch frequencies must be below the Nyquist frequency {self.sfreq / 2} Hz, got {bad}")

    def prepare(self) -> None:
        """Warm a worker before its first file: the filter taps, and torch's FFT when it is used."""
        fir_kernel(*self.design)
        if self.fft == "torch":
            import torch

            torch.fft.rfft(torch.zeros(2, 16))

    @property
    def design(self) -> tuple:
        """The filters' parameters, the key of their cached taps and responses."""
        return (float(self.sfreq), float(self.low), self.high, tuple(float(f) for f in self.notch))

    def __call__(self, rec: Recording) -> Recording:
        data = self._apply(rec.data, rec.sfreq)
        baseline = None  # a pre-trial baseline is resampled only (too short to filter, as with Resample)
        if rec.baseline is not None:
            plan = resample_plan(rec.baseline.shape[1], float(rec.sfreq), self.sfreq)
            baseline = spectral_filter(rec.baseline, plan, None, np.dtype(self.precision), self.fft)
        return rec.replace(data=data, baseline=baseline, sfreq=float(self.sfreq),
                           meta={**rec.meta, "source_sfreq": rec.meta.get("source_sfreq", rec.sfreq)})

    def _apply(self, x: np.ndarray, sfreq: float) -> np.ndarray:
        plan = resample_plan(x.shape[1], float(sfreq), self.sfreq, min_new_len=len(fir_kernel(*self.design)))
        lines = None if self.remove_dc_s is None else dc_line(x, sfreq, self.remove_dc_s)
        return spectral_filter(x, plan, self.design, np.dtype(self.precision), self.fft, lines)


@dataclass(frozen=True)
class ResamplePlan:
    """MNE's FFT-resampling geometry for one signal length (see `mne.filter.resample`)."""

    n_in: int
    pads: tuple[int, int]  # odd-reflection padding before/after, to a power-of-two length
    orig_len: int  # padded length
    new_len: int  # padded length after resampling
    start: int  # first output sample kept (MNE's `to_removes[0]`)
    final_len: int  # output samples


def resample_plan(n_in: int, sfreq_in: float, sfreq_out: float, min_new_len: int = 1) -> ResamplePlan:
    """MNE's plan; a signal shorter than the filters (`min_new_len` output samples) is padded
    further with zeros beyond its reflection, as MNE's own filter padding does (all of it is edge).

    Downsampling where MNE's output grid is exact (its power-of-two length times the rate ratio is
    whole, as for 256 -> 200 Hz), a shorter fast FFT length with the same grid gives the same samples
    away from the edges (the padding reaches them only through the filters' stop band: relative RMS
    ~1e-6, measured), so that one is used; otherwise (250 -> 200 Hz, where MNE's grid spacing is off
    by 1e-6, or upsampling, where the resampler's band edge lies in the pass band) MNE's own."""
    ratio = sfreq_out / sfreq_in
    final_len = max(int(round(ratio * n_in)), 1)
    min_add = min(n_in // 8, 100) * 2
    length = max(n_in + min_add, int(math.ceil(min_new_len / ratio)) + 1)
    total = 2 ** int(math.ceil(math.log2(length))) - n_in
    before, extra = divmod(total, 2)
    orig_len = n_in + total
    new_len = max(int(round(ratio * orig_len)), 1)
    plan = ResamplePlan(n_in, (before, before + extra), orig_len, new_len, int(round(ratio * before)), final_len)
    return _compact_plan(plan, sfreq_in, sfreq_out, min_new_len) or plan


def _compact_plan(plan: ResamplePlan, sfreq_in: float, sfreq_out: float, min_new_len: int) -> ResamplePlan | None:
    ratio = Fraction(sfreq_out).limit_denominator(10**6) / Fraction(sfreq_in).limit_denominator(10**6)
    up, down = ratio.numerator, ratio.denominator
    if ratio > 1 or float(ratio) != sfreq_out / sfreq_in or (plan.orig_len * up) % down or (plan.pads[0] * up) % down:
        return None  # MNE's grid is not whole: only its own lengths reproduce it
    half_span = int(math.ceil((min_new_len // 2 + 1) * down / up))  # the filters' reach, in input samples
    margin = -(-max(half_span, plan.n_in // 64, 64) // down) * down
    length = _fast_length(plan.n_in + 2 * margin, down)
    if length >= plan.orig_len or margin > plan.n_in - 1:
        return None
    return ResamplePlan(plan.n_in, (margin, length - plan.n_in - margin), length, length * up // down,
                        margin * up // down, plan.final_len)


def _fast_length(minimum: int, multiple: int) -> int:
    """The smallest multiple of `multiple` >= `minimum` whose factors are 2, 3, 5, 7 (fast FFTs)."""
    length = -(-minimum // multiple) * multiple
    while True:
        rest = length
        for factor in (2, 3, 5, 7):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return length
        length += multiple


@lru_cache(maxsize=16)
def fir_kernel(sfreq: float, low: float, high: float | None, notch: tuple[float, ...]) -> np.ndarray:
    """Taps of MNE's zero-phase band-pass (or high-pass) followed by its notch filters, convolved
    into one symmetric kernel (odd length, centred)."""
    import mne

    high = None if high is None or high >= sfreq / 2 else high
    kernel = mne.filter.create_filter(None, sfreq, low, high, fir_design="firwin", verbose="error")
    half = NOTCH_TRANSITION_HZ / 2
    for freq in notch:
        width = freq / 200.0  # notch_filter's default notch_widths
        stop = mne.filter.create_filter(None, sfreq, freq + width / 2 + half, freq - width / 2 - half,
                                        l_trans_bandwidth=half, h_trans_bandwidth=half, fir_design="firwin",
                                        verbose="error")
        kernel = np.convolve(kernel, stop)
    return kernel


@lru_cache(maxsize=32)
def _response(design: tuple, new_len: int, scale: float, dtype: np.dtype) -> np.ndarray:
    """Real zero-phase frequency response of the kernel on the rfft grid of `new_len`, times `scale`
    (MNE's boxcar window weight of the resampler)."""
    kernel = fir_kernel(*design) if design else np.ones(1)
    centre = len(kernel) // 2
    buffer = np.zeros(new_len)
    buffer[: len(kernel) - centre] = kernel[centre:]
    buffer[new_len - centre:] = kernel[:centre]
    return (np.fft.rfft(buffer).real * scale).astype(dtype)


def spectral_filter(x: np.ndarray, plan: ResamplePlan, design: tuple | None, dtype: np.dtype,
                    backend: str = "scipy", lines: tuple | None = None) -> np.ndarray:
    """MNE's FFT resampling of `x` (channels, samples), the kernel of `design` (None: none) applied
    in the same spectrum; FFTs by `backend` ('torch' or 'scipy'); `lines` (`dc_line`'s) subtracted first."""
    fft = _TorchFFT() if backend == "torch" else _ScipyFFT()
    response = fft.array(_response(design, plan.new_len, plan.new_len / plan.orig_len, dtype))
    shorter = plan.new_len < plan.orig_len
    use_len = plan.new_len if shorter else plan.orig_len
    bins = plan.new_len // 2 + 1
    rows = max(1, _BLOCK_SAMPLES // plan.orig_len)
    blocks = []
    for first in range(0, x.shape[0], rows):
        block = slice(first, first + rows)
        spectrum = fft.rfft(_odd_reflect_pad(x[block], plan.pads, dtype,
                                             None if lines is None else (lines[0][block], lines[1][block], lines[2])))
        if use_len % 2 == 0:  # MNE's handling of the Nyquist bin of the shorter length
            spectrum[:, use_len // 2] *= 2 if shorter else 0.5
        spectrum = spectrum[:, :bins] if spectrum.shape[1] >= bins else fft.pad(spectrum, bins)
        spectrum *= response
        resampled = fft.irfft(spectrum, plan.new_len)
        blocks.append(resampled[:, plan.start:plan.start + plan.final_len])
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks)  # one block: a view, no copy


class _ScipyFFT:
    def array(self, values: np.ndarray):
        return values

    def rfft(self, block: np.ndarray):
        from scipy import fft

        return fft.rfft(block, axis=1, overwrite_x=True)

    def pad(self, spectrum, bins: int):
        return np.concatenate([spectrum, np.zeros((spectrum.shape[0], bins - spectrum.shape[1]), spectrum.dtype)], axis=1)

    def irfft(self, spectrum, n: int) -> np.ndarray:
        from scipy import fft

        return fft.irfft(spectrum, n, axis=1, overwrite_x=True)


class _TorchFFT(_ScipyFFT):
    def array(self, values: np.ndarray):
        import torch

        return torch.from_numpy(values)

    def rfft(self, block: np.ndarray):
        import torch

        return torch.fft.rfft(torch.from_numpy(block), dim=1)

    def pad(self, spectrum, bins: int):
        import torch

        return torch.nn.functional.pad(spectrum, (0, bins - spectrum.shape[1]))

    def irfft(self, spectrum, n: int) -> np.ndarray:
        import torch

        return torch.fft.irfft(spectrum, n, dim=1).numpy()


def _odd_reflect_pad(x: np.ndarray, pads: tuple[int, int], dtype: np.dtype, lines: tuple | None = None) -> np.ndarray:
    """MNE's 'reflect_limited' padding: odd reflection about the end samples, zeros beyond the signal
    (of `x` less each channel's `dc_line`, when `lines` are given)."""
    before, after = pads
    channels, n = x.shape
    out = np.empty((channels, before + n + after), dtype=dtype)
    if lines is None:
        _reflect(x, out, before, after)
    else:
        start, end, ramp = lines
        for row in range(channels):  # one channel at a time: no recording-sized temporaries
            _reflect(x[row:row + 1] - (start[row] + (end[row] - start[row]) * ramp), out[row:row + 1], before, after)
    return out


def _reflect(x: np.ndarray, out: np.ndarray, before: int, after: int) -> None:
    n = x.shape[1]
    out[:, before:before + n] = x
    take = min(before, n - 1)
    out[:, :before - take] = 0
    np.subtract(2 * x[:, :1], x[:, 1:take + 1][:, ::-1], out=out[:, before - take:before], casting="same_kind")
    take = min(after, n - 1)
    np.subtract(2 * x[:, -1:], x[:, n - 1 - take:n - 1][:, ::-1], out=out[:, before + n:before + n + take],
                casting="same_kind")
    out[:, before + n + take:] = 0
