"""Stimulus segments and training-side statistics of a prepared corpus (Ray Datasets).

A segment is one stretch of one trial as every subject saw it: the windows sharing
(dataset, session, trial, window_index), stacked along a subject axis in subject order. Windows
of a trial are the same film for every subject in DEAP and DREAMER, so a segment's rows are
different people's responses to the same stimulus.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from physiofm.data.splits import group_keys

SEGMENT_KEY = ("dataset", "session", "trial", "window_index")
TRIAL_KEY = ("dataset", "session", "trial")


def column_range(dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise (minimum, maximum) of a tensor column over every row: one pass, one row per block."""

    def extrema(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = np.asarray(batch[column])
        if len(values) == 0:  # a block emptied by a split
            return {"minimum": values[:0], "maximum": values[:0]}
        return {"minimum": values.min(axis=0, keepdims=True), "maximum": values.max(axis=0, keepdims=True)}

    parts = dataset.select_columns([column]).map_batches(extrema, batch_format="numpy").take_all()
    if not parts:
        raise ValueError(f"no rows to fit the range of column {column!r} on")
    minimum = np.min([p["minimum"] for p in parts], axis=0)
    maximum = np.max([p["maximum"] for p in parts], axis=0)
    if not (np.isfinite(minimum).all() and np.isfinite(maximum).all()):
        raise ValueError(f"column {column!r} holds non-finite values")
    return minimum, maximum


def window_keys(dataset):
    """Segment key columns and subject of every window, as a pandas DataFrame (metadata only)."""
    return dataset.select_columns([*SEGMENT_KEY, "subject"]).to_pandas()


def complete_segments(windows, n_subjects: int) -> tuple[np.ndarray, int]:
    """(keys of the segments that hold each of `n_subjects` subjects exactly once, how many do not)."""
    import pandas as pd

    keys = group_keys({c: windows[c].to_numpy() for c in SEGMENT_KEY}, SEGMENT_KEY)
    counts = pd.DataFrame({"key": keys, "subject": windows["subject"].to_numpy()}).groupby("key")["subject"]
    sizes = counts.agg(["size", "nunique"])
    complete = (sizes["size"] == n_subjects) & (sizes["nunique"] == n_subjects)
    return sizes.index[complete].to_numpy(dtype=str), int((~complete).sum())


def trials_of(windows) -> set[str]:
    return set(group_keys({c: windows[c].to_numpy() for c in TRIAL_KEY}, TRIAL_KEY).tolist())


PARTITION_BYTES = 128 * 2**20  # what one partition of the grouping's shuffle holds, about


def stack_segments(dataset, keys: np.ndarray, columns: Sequence[str], segment_bytes: int = 0):
    """One row per segment in `keys`: each of `columns` stacked (subjects, ...) in subject order.

    `segment_bytes` (one segment's tensors) sizes the shuffle: about `PARTITION_BYTES` per partition
    (Ray Data's default of 200 partitions makes a small corpus pay for 200 tiny ones)."""
    keep = np.sort(np.asarray(keys, dtype=str))
    columns = list(columns)

    def only_kept(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.isin(group_keys(batch, SEGMENT_KEY), keep)
        return {name: values[mask] for name, values in batch.items()}

    def stack(group: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        order = np.argsort(group["subject"].astype(str), kind="stable")
        return {name: group[name][order][None] for name in columns}

    kept = dataset.select_columns([*columns, *SEGMENT_KEY, "subject"]).map_batches(only_kept, batch_format="numpy")
    partitions = None
    if segment_bytes > 0:
        partitions = int(min(200, max(1, -(-len(keep) * segment_bytes // PARTITION_BYTES))))
    return kept.groupby(list(SEGMENT_KEY), num_partitions=partitions).map_groups(stack, batch_format="numpy")


def slice_windows(dataset, columns: Sequence[str], n_slices: int):
    """Each row's windows (..., T) cut into `n_slices` rows of (..., T / n_slices), in time order."""
    columns = list(columns)

    def cut(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for name in columns:
            values = batch[name]
            n, length = len(values), values.shape[-1]
            if length % n_slices:
                raise ValueError(f"column {name!r} windows of {length} samples do not cut into {n_slices} slices")
            pieces = values.reshape(*values.shape[:-1], n_slices, length // n_slices)
            out[name] = np.moveaxis(pieces, -2, 1).reshape(n * n_slices, *values.shape[1:-1], length // n_slices)
        return out

    return dataset.select_columns(columns).map_batches(cut, batch_format="numpy")
