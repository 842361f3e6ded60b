"""Last step of a preset: cut a preprocessed recording into fixed-size windows (tensors)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.signal import butter, sosfiltfilt

from physiofm.data.recording import Recording, RecordingRejected

DE_BANDS = (("delta", 1.0, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 14.0), ("beta", 14.0, 31.0),
            ("gamma", 31.0, 50.0))


@dataclass
class Windows:
    """Windows of one recording: float32 tensors (n, ...) per column and each window's start."""

    tensors: dict[str, np.ndarray]
    index: np.ndarray  # position of each kept window among all windows of the recording
    start_s: np.ndarray
    n_rejected: int = 0
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)


def frame(data: np.ndarray, width: int) -> np.ndarray:
    """(C, T) → (n, C, width) non-overlapping windows; the tail shorter than a window is dropped."""
    n = data.shape[1] // width
    return data[:, : n * width].reshape(data.shape[0], n, width).transpose(1, 0, 2)


def _kept(rec: Recording, keep: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(index, start in seconds from the file's start) of the kept windows."""
    index = np.flatnonzero(keep).astype(np.int64)
    return index, rec.meta.get("offset_s", 0.0) + index * window_s


def _need_one(rec: Recording, width: int, window_s: float) -> None:
    if rec.n_samples < width:
        raise RecordingRejected(f"shorter than one window: {rec.duration_s:.2f} s < {window_s:g} s")


@dataclass(frozen=True)
class PatchWindows:
    """Windows of `window_s` split into patches of `patch_s`: column (C, N, P).

    Windows with max|x| >= `max_abs` (in the scaled unit) or any non-finite value are dropped.
    With `mask_column`, the channel mask from channel selection is written beside every row.
    """

    window_s: float
    patch_s: float = 1.0
    column: str = "x"
    max_abs: float | None = None
    mask_column: str | None = None

    def __call__(self, rec: Recording) -> Windows:
        width, patch = int(round(self.window_s * rec.sfreq)), int(round(self.patch_s * rec.sfreq))
        if width % patch:
            raise ValueError(f"window_s {self.window_s} is not a whole number of patches of {self.patch_s} s")
        _need_one(rec, width, self.window_s)
        windows = frame(rec.data, width)
        keep = np.isfinite(windows).all(axis=(1, 2))
        if self.max_abs is not None:
            keep &= np.abs(windows).max(axis=(1, 2), initial=0.0) < self.max_abs
        kept = windows[keep].reshape(int(keep.sum()), windows.shape[1], width // patch, patch)
        masks = {}
        if self.mask_column:
            masks[self.mask_column] = np.asarray(rec.meta.get("channel_mask", [True] * rec.data.shape[0]), dtype=bool)
        return Windows({self.column: kept.astype(np.float32)}, *_kept(rec, keep, self.window_s), int((~keep).sum()), masks)


@dataclass(frozen=True)
class DEFeatures:
    """Differential entropy ½·log(2πe·σ²) of each band per channel over `window_s`: column (C, bands)."""

    window_s: float = 1.0
    bands: tuple[tuple[str, float, float], ...] = DE_BANDS
    column: str = "x"
    order: int = 4

    def __call__(self, rec: Recording) -> Windows:
        width = int(round(self.window_s * rec.sfreq))
        _need_one(rec, width, self.window_s)
        variances = []
        for _, low, high in self.bands:
            if high >= rec.sfreq / 2:
                raise RecordingRejected(f"band {low}-{high} Hz needs a rate above {2 * high} Hz, got {rec.sfreq}")
            sos = butter(self.order, (low, high), btype="bandpass", fs=rec.sfreq, output="sos")
            variances.append(frame(sosfiltfilt(sos, rec.data, axis=1), width).var(axis=2))
        variance = np.stack(variances, axis=-1)  # (n, C, bands)
        keep = np.isfinite(variance).all(axis=(1, 2)) & (variance > 0).all(axis=(1, 2))
        features = 0.5 * np.log(2 * np.pi * np.e * variance[keep])
        return Windows({self.column: features.astype(np.float32)}, *_kept(rec, keep, self.window_s), int((~keep).sum()))


@dataclass(frozen=True)
class GroupWindows:
    """Windows of `window_s` with one column per channel group, (C_group, samples) each.

    Groups are (column, channel types), e.g. eeg ← ('eeg',), peripheral ← ('gsr', 'ecg').
    """

    window_s: float
    groups: tuple[tuple[str, tuple[str, ...]], ...]

    def __call__(self, rec: Recording) -> Windows:
        width = int(round(self.window_s * rec.sfreq))
        _need_one(rec, width, self.window_s)
        windows = frame(rec.data, width)
        keep = np.isfinite(windows).all(axis=(1, 2))
        kept = windows[keep]
        tensors = {}
        for column, types in self.groups:
            rows = [i for i, kind in enumerate(rec.ch_types) if kind in types]
            if not rows:
                raise RecordingRejected(f"no channel of types {list(types)} for column {column!r}")
            tensors[column] = kept[:, rows].astype(np.float32)
        return Windows(tensors, *_kept(rec, keep, self.window_s), int((~keep).sum()))
