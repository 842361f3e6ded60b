"""Resampling inside readers (channels recorded at different rates) that never spreads invalid samples."""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly


def resample_marking_invalid(signal: np.ndarray, up: int, down: int) -> np.ndarray:
    """`resample_poly` of a 1-D signal whose invalid samples are interpolated first and are NaN again,
    at the output samples their time covers, afterwards."""
    invalid = ~np.isfinite(signal)
    if not invalid.any():
        return resample_poly(signal, up, down)
    if invalid.all():
        return np.full(math.ceil(len(signal) * up / down), np.nan)
    samples = np.arange(len(signal))
    filled = signal.copy()
    filled[invalid] = np.interp(samples[invalid], samples[~invalid], signal[~invalid])
    out = resample_poly(filled, up, down)
    # output sample j covers input time [j*down/up, (j+1)*down/up): invalid if any input sample there is
    first = (np.arange(len(out)) * down) // up
    last = np.minimum(((np.arange(len(out)) + 1) * down - 1) // up, len(signal) - 1)
    counts = np.concatenate([[0], np.cumsum(invalid)])
    out[counts[last + 1] - counts[first] > 0] = np.nan
    return out
