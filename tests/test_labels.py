"""Label schemes: thresholds and their ties, quadrants, SEED / SEED-IV classes, cross-corpus mappings."""
from __future__ import annotations

import numpy as np
import pytest

from physiofm.data.labels import QUADRANTS, decode_ratings, label_scheme, shared_labels


def ratings(**columns):
    n = len(next(iter(columns.values())))
    return [{k: v[i] for k, v in columns.items() if v[i] is not None} for i in range(n)]


@pytest.mark.parametrize("dataset, threshold, below", [("deap", 5.0, 4.99), ("amigos", 5.0, 4.99), ("dreamer", 3.0, 2.0)])
def test_binary_ratings_threshold_and_ties_count_as_high(dataset, threshold, below):
    scheme = label_scheme(dataset, "arousal")
    rows = ratings(arousal=[threshold, below, threshold + 0.01, None])
    assert scheme.assign([-1] * 4, rows).tolist() == [1, 0, 1, -1]  # tie high; missing rating dropped
    assert scheme.classes == ("low", "high") and f">= {threshold:g}" in scheme.description
    assert "counts as high" in scheme.description


def test_quadrants_cross_binary_valence_and_arousal():
    scheme = label_scheme("deap", "quadrant")
    rows = ratings(valence=[1.0, 1.0, 9.0, 9.0, 5.0, 5.0], arousal=[1.0, 9.0, 1.0, 9.0, 5.0, None])
    assert scheme.assign([-1] * 6, rows).tolist() == [0, 1, 2, 3, 3, -1]
    assert scheme.classes == QUADRANTS == ("LVLA", "LVHA", "HVLA", "HVHA")


def test_seed_classes_and_cross_corpus_mappings():
    # the readers give SEED 0 negative, 1 neutral, 2 positive; SEED-IV 0 neutral, 1 sad, 2 fear, 3 happy
    assert label_scheme("seed", "emotion").assign([0, 1, 2, -1], []).tolist() == [0, 1, 2, -1]
    assert label_scheme("seediv", "emotion").assign([0, 1, 2, 3], []).tolist() == [0, 1, 2, 3]
    three = label_scheme("seediv", "emotion3")
    assert three.classes == label_scheme("seed", "emotion3").classes == ("negative", "neutral", "positive")
    assert three.assign([0, 1, 2, 3], []).tolist() == [1, 0, 0, 2]  # sad and fear -> negative
    assert label_scheme("seediv", "valence").assign([0, 1, 2, 3], []).tolist() == [-1, 0, 0, 1]  # neutral left out
    assert label_scheme("seed", "valence").assign([0, 1, 2], []).tolist() == [0, -1, 1]
    assert shared_labels("seed", "seediv") == ["emotion3", "valence"]
    assert shared_labels("deap", "seed") == ["valence"]
    assert "quadrant" in shared_labels("deap", "dreamer")


def test_unknown_label_names_the_dataset_and_the_allowed_labels():
    with pytest.raises(ValueError, match=r"label 'quadrant' is not defined for seed; allowed labels for seed: "
                                         r"\['emotion', 'emotion3', 'valence'\]"):
        label_scheme("seed", "quadrant")
    with pytest.raises(ValueError, match="dataset must be one of"):
        label_scheme("faced", "valence")


def test_ratings_column_decodes_once_per_distinct_text():
    texts = np.array(['{"valence": 5.0}', '{"valence": 5.0}', ""], dtype=object)
    decoded = decode_ratings(texts)
    assert decoded == [{"valence": 5.0}, {"valence": 5.0}, {}] and decoded[0] is decoded[1]
