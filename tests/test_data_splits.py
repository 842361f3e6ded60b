"""Held-out splits by group: no group (trial, recording, subject) on both sides."""
from __future__ import annotations

import numpy as np
import pytest

from physiofm.data.splits import choose_validation_groups, group_keys, split_by_group


def test_choice_is_exact_deterministic_and_never_empties_training():
    groups = [f"t{i}" for i in range(40)]
    held = choose_validation_groups(groups, 0.25, seed=1)
    assert len(held) == 10 and held <= set(groups)
    assert held == choose_validation_groups(list(reversed(groups)), 0.25, seed=1)  # order-free
    assert held != choose_validation_groups(groups, 0.25, seed=2)
    assert choose_validation_groups(["a", "b"], 0.9, seed=0) in ({"a"}, {"b"})
    assert choose_validation_groups(["only"], 0.5, seed=0) == set()
    with pytest.raises(ValueError, match=r"validation fraction must be in \[0, 1\)"):
        choose_validation_groups(groups, 1.0, seed=0)


def test_multi_column_keys():
    keys = group_keys({"dataset": np.array(["deap", "deap"]), "trial": np.array([3, 4])}, ["dataset", "trial"])
    assert list(keys) == ["deap\x1f3", "deap\x1f4"]


def test_windows_of_one_trial_never_on_both_sides(ray_local):
    import ray.data

    rng = np.random.default_rng(0)
    rows = [{"x": rng.standard_normal((2, 3)).astype(np.float32), "subject": f"s{s}", "trial": str(t),
             "window_index": w} for s in range(4) for t in range(10) for w in range(6)]
    dataset = ray.data.from_items(rows, override_num_blocks=8)  # each trial spans blocks (4 subjects' rows)
    train, validation, held = split_by_group(dataset, ["trial"], 0.3, seed=5)
    train_rows, val_rows = train.take_all(), validation.take_all()
    assert len(train_rows) + len(val_rows) == len(rows)
    train_trials = {r["trial"] for r in train_rows}
    val_trials = {r["trial"] for r in val_rows}
    assert val_trials == held and len(held) == 3
    assert not train_trials & val_trials
    assert all(len([r for r in val_rows if r["trial"] == t]) == 4 * 6 for t in val_trials)  # whole trials
