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
    rejections: dict[str, int] = field(default_factory=dict)  # why windows were dropped → how many
    notes: list[str] = field(default_factory=list)  # what the reader and the steps noted on the way
    channels: list[str] = field(default_factory=list)  # the recording's channels that reached the windows

    def __len__(self) -> int:
        return len(self.index)

    def describe_rejections(self) -> str:
        causes = ", ".join(f"{count} {why}" for why, count in self.rejections.items() if count)
        return f"{self.n_rejected} of {self.n_rejected + len(self)} windows failed the checks" + (
            f" ({causes})" if causes else "")


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
        raise RecordingRejected(f"shorter than one window: {rec.duration_s:.2f} s < {window_s:g} s", "too_short")


@dataclass(frozen=True)
class PatchWindows:
    """Windows of `window_s` split into patches of `patch_s`: column (C, N, P).

    Windows with any non-finite value, a peak max|x| >= `max_abs`, or a peak below `min_peak` (flat,
    or scaled 1000x too small) are dropped; bounds are in the scaled unit, `amplitude_unit` (label,
    factor from the scaled unit) only words the reasons. With `mask_column`, the channel mask from
    channel selection is written beside every row.
    """

    window_s: float
    patch_s: float = 1.0
    column: str = "x"
    max_abs: float | None = None
    mask_column: str | None = None
    min_peak: float | None = None
    amplitude_unit: tuple[str, float] = ("", 1.0)

    def __call__(self, rec: Recording) -> Windows:
        width, patch = int(round(self.window_s * rec.sfreq)), int(round(self.patch_s * rec.sfreq))
        if width % patch:
            raise ValueError(f"window_s {self.window_s} is not a whole number of patches of {self.patch_s} s")
        _need_one(rec, width, self.window_s)
        windows = frame(rec.data, width)
        # Per window, two reductions over the samples in place: NaN and inf propagate into max/min.
        blocks = rec.data[:, : len(windows) * width].reshape(rec.data.shape[0], len(windows), width)
        high, low = blocks.max(axis=(0, 2)), blocks.min(axis=(0, 2))
        finite = np.isfinite(high) & np.isfinite(low)
        peaks = np.where(finite, np.maximum(high, -low), np.nan)
        label, factor = self.amplitude_unit
        rejections = {"non-finite": int((~finite).sum())}
        keep = finite.copy()
        if self.max_abs is not None:
            high = finite & (peaks >= self.max_abs)
            if high.any():
                rejections[f"with a peak >= {self.max_abs * factor:g} {label} (largest "
                           f"{np.nanmax(peaks[high]) * factor:.4g} {label})".replace("  ", " ")] = int(high.sum())
            keep &= ~high
        if self.min_peak is not None:
            low = finite & (peaks < self.min_peak)
            if low.any():
                rejections[f"with a peak < {self.min_peak * factor:g} {label}, flat or mis-scaled (smallest "
                           f"{np.nanmin(peaks[low]) * factor:.4g} {label})".replace("  ", " ")] = int(low.sum())
            keep &= ~low
        kept = windows[keep].reshape(int(keep.sum()), windows.shape[1], width // patch, patch)
        masks = {}
        if self.mask_column:
            masks[self.mask_column] = np.asarray(rec.meta.get("channel_mask", [True] * rec.data.shape[0]), dtype=bool)
        return Windows({self.column: kept.astype(np.float32, copy=False)}, *_kept(rec, keep, self.window_s), int((~keep).sum()), masks,
                       rejections={k: v for k, v in rejections.items() if v})


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
                raise RecordingRejected(f"band {low}-{high} Hz needs a rate above {2 * high} Hz, got {rec.sfreq}", "sampling_rate")
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
                raise RecordingRejected(f"no channel of types {list(types)} for column {column!r}", "missing_channels")
            tensors[column] = kept[:, rows].astype(np.float32)
        return Windows(tensors, *_kept(rec, keep, self.window_s), int((~keep).sum()))
