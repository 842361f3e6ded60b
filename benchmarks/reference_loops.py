"""Reference preprocessing loops, written by us after the published code, to compare against.

`cbramod_loop_file` follows the official CBraMod TUEG preprocessing step by step: MNE reads the
EDF, picks the 19 channels by their montage's labels, `raw.resample(200)`, `raw.filter(0.3, 75)`,
`raw.notch_filter(60)` on the whole recording, `to_data_frame()` (µV), drops recordings under
300 s, trims 60 s at the start and 60 s plus the remainder of a 30-s window at the end, cuts
30-s windows (19, 30, 200) and keeps those with max|x| < 100 µV.

`ecg_loop_file` is the plain wfdb + scipy loop of the ECG recipe: `wfdb.rdrecord`, the straight
line between the means of the first and last 0.1 s removed, polyphase resampling to 200 Hz,
4th-order Butterworth 0.5-45 Hz (`sosfiltfilt`), IIR notch 50 Hz (`filtfilt`, Q 30), mV, 10-s
windows (12, 10, 200) whose peak lies in [0.05, 10) mV.

Both return (windows float32, kept window indices), the same quantities the pipeline stores.
"""
from __future__ import annotations

import numpy as np

from physiofm.data.channels import CBRAMOD_19, ECG_12, canonical_lead

SFREQ = 200


def tueg_labels(path: str) -> list[str]:
    """The 19 labels the official code picks for a TUEG file, by the montage folder in its path."""
    suffix = "LE" if "02_tcp_le" in path else "REF"
    return [f"EEG {name}-{suffix}" for name in CBRAMOD_19]


def cbramod_loop_file(path: str, min_s: float = 300.0, trim_s: float = 60.0,
                      window_s: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    import mne

    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    labels = tueg_labels(path)
    if any(label not in raw.ch_names for label in labels):
        return np.zeros((0, 19, int(window_s), SFREQ), np.float32), np.zeros(0, np.int64)
    raw.pick(labels)
    raw.resample(SFREQ, verbose="error")
    raw.filter(l_freq=0.3, h_freq=75, verbose="error")
    raw.notch_filter(60, verbose="error")
    signal = raw.to_data_frame().values[:, 1:]  # (samples, channels) in µV, time column dropped
    points, channels = signal.shape
    width = int(window_s * SFREQ)
    if points < min_s * SFREQ:
        return np.zeros((0, channels, int(window_s), SFREQ), np.float32), np.zeros(0, np.int64)
    cut = int(trim_s * SFREQ)
    signal = signal[cut: points - (points % width) - cut]
    windows = signal.reshape(-1, int(window_s), SFREQ, channels).transpose(0, 3, 1, 2)
    keep = np.array([np.max(np.abs(w)) < 100 for w in windows], dtype=bool)
    return windows[keep].astype(np.float32), np.flatnonzero(keep)


def ecg_loop_file(header_path: str, window_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    import wfdb
    from scipy.signal import butter, filtfilt, iirnotch, resample_poly, sosfiltfilt

    record = wfdb.rdrecord(header_path[: -len(".hea")])
    order = [next(i for i, name in enumerate(record.sig_name) if canonical_lead(name) == lead) for lead in ECG_12]
    signal = record.p_signal.T[order]
    edge = max(1, int(round(0.1 * record.fs)))
    start, end = signal[:, :edge].mean(axis=1, keepdims=True), signal[:, -edge:].mean(axis=1, keepdims=True)
    signal = signal - (start + (end - start) * np.linspace(0.0, 1.0, signal.shape[1])[None])
    up, down = SFREQ, int(record.fs)
    divisor = np.gcd(up, down)
    signal = resample_poly(signal, up // divisor, down // divisor, axis=1)
    signal = sosfiltfilt(butter(4, (0.5, 45.0), btype="bandpass", fs=SFREQ, output="sos"), signal, axis=1)
    b, a = iirnotch(50.0, 30.0, fs=SFREQ)
    signal = filtfilt(b, a, signal, axis=1)
    width = int(window_s * SFREQ)
    n = signal.shape[1] // width
    windows = signal[:, : n * width].reshape(len(ECG_12), n, int(window_s), SFREQ).transpose(1, 0, 2, 3)
    peaks = np.abs(windows).max(axis=(1, 2, 3))
    keep = (peaks >= 0.05) & (peaks < 10.0)
    return windows[keep].astype(np.float32), np.flatnonzero(keep)
