"""Label schemes of the emotion datasets: a trial's ratings (or class) -> one class per window.

Binary ratings are high when rating >= the dataset's threshold (DEAP and AMIGOS 1-9 at 5, DREAMER
1-5 at 3): a rating equal to the threshold counts as high, as PhysioSync's code does. Quadrants
cross binary valence and arousal. SEED is 3-class, SEED-IV 4-class. Cross-corpus mappings are
schemes that several datasets define with the same classes: `emotion3` (SEED's negative /
neutral / positive; SEED-IV's sad and fear -> negative, happy -> positive) and `valence`
(binary; SEED and SEED-IV: negative / sad / fear low, positive / happy high, neutral left out).
A window whose trial lacks what its scheme needs (a missing rating, an unknown class, a class the
scheme leaves out) gets class -1 and is dropped, and counted, by the caller.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

RATING_SCALES = {"deap": (1.0, 9.0, 5.0), "dreamer": (1.0, 5.0, 3.0), "amigos": (1.0, 9.0, 5.0)}  # min, max, threshold
RATED = {"deap": ("valence", "arousal", "dominance", "liking"), "dreamer": ("valence", "arousal", "dominance"),
         "amigos": ("valence", "arousal", "dominance", "liking")}
CLASS_NAMES = {"seed": ("negative", "neutral", "positive"), "seediv": ("neutral", "sad", "fear", "happy")}
QUADRANTS = ("LVLA", "LVHA", "HVLA", "HVHA")  # index = 2 * high valence + high arousal


@dataclass(frozen=True)
class LabelScheme:
    """How one dataset's trials become classes: a rating threshold, a quadrant, or a class map."""

    dataset: str
    name: str
    classes: tuple[str, ...]
    description: str
    rating: str = ""  # binary: the rating thresholded
    threshold: float = math.nan
    class_map: Mapping[int, int] = field(default_factory=dict)  # class map: the dataset's class -> ours

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def assign(self, label: Sequence[int], ratings: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Class per window (-1 where the trial cannot be labelled) from the `label` column (class
        datasets) and the decoded `labels` column (rated datasets)."""
        if self.class_map:
            return np.array([self.class_map.get(int(value), -1) for value in label], dtype=np.int64)
        if self.name == "quadrant":
            valence, arousal = (self._high(ratings, key) for key in ("valence", "arousal"))
            known = (valence >= 0) & (arousal >= 0)
            return np.where(known, 2 * valence + arousal, -1).astype(np.int64)
        return self._high(ratings, self.rating)

    def _high(self, ratings: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
        values = np.array([float(r.get(key, math.nan)) for r in ratings], dtype=np.float64)
        out = np.where(values >= self.threshold, 1, 0)
        return np.where(np.isfinite(values), out, -1).astype(np.int64)

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "name": self.name, "classes": list(self.classes),
                "description": self.description}


def _rated(dataset: str) -> dict[str, LabelScheme]:
    low, high, threshold = RATING_SCALES[dataset]
    scale = f"{low:g}-{high:g}"
    schemes = {
        key: LabelScheme(dataset, key, ("low", "high"), rating=key, threshold=threshold,
                         description=f"{key} rating {scale}: high if >= {threshold:g} (a rating of exactly "
                                     f"{threshold:g} counts as high), low below")
        for key in RATED[dataset]}
    schemes["quadrant"] = LabelScheme(
        dataset, "quadrant", QUADRANTS, threshold=threshold,
        description=f"valence x arousal quadrants, each rating ({scale}) high if >= {threshold:g}: "
                    "LVLA, LVHA, HVLA, HVHA")
    return schemes


def _classes(dataset: str, name: str, classes: tuple[str, ...], mapping: dict[str, str | None],
             description: str) -> LabelScheme:
    source = CLASS_NAMES[dataset]
    class_map = {source.index(k): classes.index(v) for k, v in mapping.items() if v is not None}
    return LabelScheme(dataset, name, classes, class_map=class_map, description=description)


def _seed() -> dict[str, LabelScheme]:
    three = ("negative", "neutral", "positive")
    return {
        "emotion": _classes("seed", "emotion", three, {c: c for c in three},
                            "SEED film classes: negative, neutral, positive (label.mat -1/0/1)"),
        "emotion3": _classes("seed", "emotion3", three, {c: c for c in three},
                             "the 3 classes shared with SEED-IV: negative, neutral, positive"),
        "valence": _classes("seed", "valence", ("low", "high"), {"negative": "low", "positive": "high",
                                                                   "neutral": None},
                            "binary valence for DEAP/DREAMER/AMIGOS pairs: negative low, positive high, "
                            "neutral trials left out"),
    }


def _seediv() -> dict[str, LabelScheme]:
    four = CLASS_NAMES["seediv"]
    return {
        "emotion": _classes("seediv", "emotion", four, {c: c for c in four},
                            "SEED-IV film classes: neutral, sad, fear, happy (the session tables of its ReadMe)"),
        "emotion3": _classes("seediv", "emotion3", ("negative", "neutral", "positive"),
                             {"neutral": "neutral", "sad": "negative", "fear": "negative", "happy": "positive"},
                             "SEED's 3 classes: sad and fear -> negative, neutral -> neutral, happy -> positive"),
        "valence": _classes("seediv", "valence", ("low", "high"), {"sad": "low", "fear": "low", "happy": "high",
                                                                     "neutral": None},
                            "binary valence: sad and fear low, happy high, neutral trials left out"),
    }


SCHEMES: dict[str, dict[str, LabelScheme]] = {"deap": _rated("deap"), "dreamer": _rated("dreamer"),
                                              "amigos": _rated("amigos"), "seed": _seed(), "seediv": _seediv()}
DEFAULT_LABELS = {"deap": "valence", "dreamer": "valence", "amigos": "valence", "seed": "emotion",
                  "seediv": "emotion"}


def label_scheme(dataset: str, name: str) -> LabelScheme:
    """The scheme `name` of `dataset`; an unknown dataset or label fails naming the allowed ones."""
    if dataset not in SCHEMES:
        raise ValueError(f"dataset must be one of {sorted(SCHEMES)}, got {dataset!r}")
    if name not in SCHEMES[dataset]:
        raise ValueError(f"label {name!r} is not defined for {dataset}; allowed labels for {dataset}: "
                         f"{sorted(SCHEMES[dataset])}")
    return SCHEMES[dataset][name]


def shared_labels(first: str, second: str) -> list[str]:
    """Schemes two datasets both define with the same classes (what a cross-corpus pair can use)."""
    return sorted(name for name, scheme in SCHEMES[first].items()
                  if name in SCHEMES[second] and SCHEMES[second][name].classes == scheme.classes)


def decode_ratings(texts: Iterable[str]) -> list[dict[str, float]]:
    """The corpus' `labels` column (JSON per window) as dicts; each distinct text decoded once."""
    cache: dict[str, dict[str, float]] = {}
    out = []
    for text in texts:
        text = str(text)
        if text not in cache:
            cache[text] = json.loads(text) if text else {}
        out.append(cache[text])
    return out
