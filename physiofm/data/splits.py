"""Held-out splits by group: every window of a group (a trial, a recording, a subject) lands on
one side only, so adjacent seconds of one trial never sit in both training and validation.

The groups are listed once (a streaming pass over the key columns only), ordered, shuffled with the seed,
and the first `ceil(fraction · n)` go to validation: exact, deterministic, and independent of
how the corpus is sharded.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

_SEP = "\x1f"  # joins multi-column keys; never appears in paths, names or ids


def group_keys(batch: dict[str, np.ndarray], by: Sequence[str]) -> np.ndarray:
    """One string key per row from the `by` columns of a numpy batch."""
    parts = [np.asarray(batch[column]).astype(str) for column in by]
    keys = parts[0]
    for part in parts[1:]:
        keys = np.char.add(np.char.add(keys, _SEP), part)
    return keys


def choose_validation_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    ordered = sorted(set(groups))
    if fraction == 0.0 or len(ordered) < 2:
        return set()
    count = min(len(ordered) - 1, max(1, math.ceil(fraction * len(ordered))))
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in order[:count]}


def list_groups(dataset, by: Sequence[str]) -> list[str]:
    """Every group key of a Ray Dataset: one streaming pass over the key columns that keeps each
    batch's distinct keys only (a hash-shuffle `groupby` would start aggregator actors to count rows
    nobody reads)."""
    by = list(by)

    def distinct(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"key": np.unique(group_keys(batch, by))}

    parts = dataset.select_columns(by).map_batches(distinct, batch_format="numpy").take_all()
    return sorted({str(row["key"]) for row in parts})


def split_by_group(dataset, by: Sequence[str], fraction: float, seed: int = 0):
    """(train, validation, validation group keys) of a Ray Dataset holding the `by` columns."""
    by = list(by)
    held_out = choose_validation_groups(list_groups(dataset, by), fraction, seed)
    held_out_array = np.array(sorted(held_out), dtype=str)

    def side(validation: bool):
        def keep(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            mask = np.isin(group_keys(batch, by), held_out_array) == validation
            return {name: values[mask] for name, values in batch.items()}
        return keep

    train = dataset.map_batches(side(False), batch_format="numpy")
    validation = dataset.map_batches(side(True), batch_format="numpy")
    return train, validation, held_out
