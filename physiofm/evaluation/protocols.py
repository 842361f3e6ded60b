"""Evaluation protocols as code: which windows train, select the model, and test, fold by fold.

Every splitter here decides on *groups* (a subject's trial, or a subject), never on windows: it
gives each group exactly one side (train, validation or test) and a window goes where its group
went. So one trial (subject-dependent) or one subject (LOSO, cross-subject) cannot land on both
sides, by construction, and the validation groups used for model selection are always carved out
of the training side, never out of the test fold.

    subject-dependent  k folds of each subject's trials, stratified by class (pooled: one model
                       per fold over all subjects; `per_subject`: one model per subject and fold)
    loso               one fold per subject held out
    cross-subject      k folds of subjects
    cross-corpus       source windows (if any) train; each target subject's first trials (in trial
                       order, `adapt_fraction` of them) adapt; the rest of the target tests
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

PROTOCOLS = ("subject-dependent", "loso", "cross-subject", "cross-corpus")
SIDES = ("train", "validation", "test")
UNITS = {"subject-dependent": "trial", "loso": "subject", "cross-subject": "subject", "cross-corpus": "trial"}


class ProtocolError(ValueError):
    """The data cannot support the protocol as asked (too few subjects, trials or classes)."""


@dataclass(frozen=True)
class WindowTable:
    """What a splitter sees of each window: its subject, its trial (unique across subjects), its
    class, its corpus role ("target" or "source") and its trial's position in the subject's order."""

    subject: np.ndarray
    trial: np.ndarray
    y: np.ndarray
    role: np.ndarray | None = None
    trial_order: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.subject)
        for name in ("trial", "y", "role", "trial_order"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"WindowTable.{name} has {len(value)} rows for {n} windows")

    def __len__(self) -> int:
        return len(self.subject)

    def roles(self) -> np.ndarray:
        return np.full(len(self), "target", dtype=object) if self.role is None else np.asarray(self.role)


@dataclass
class Fold:
    """Window indices of each side, and the groups (trials or subjects) each side holds."""

    name: str
    unit: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    groups: dict[str, list[str]] = field(default_factory=dict)
    subject: str = ""  # per-subject folds: whose model this is

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "subject": self.subject,
                "windows": {side: int(len(getattr(self, side))) for side in SIDES},
                **{side: self.groups.get(side, []) for side in SIDES}}


@dataclass(frozen=True)
class ProtocolConfig:
    protocol: str = "subject-dependent"
    folds: int = 5  # subject-dependent and cross-subject
    seed: int = 0
    validation_fraction: float = 0.2  # of the training side's groups
    per_subject: bool = False  # subject-dependent: one model per subject
    adapt_fraction: float = 0.6  # cross-corpus: first trials of each target subject that adapt

    def validate(self) -> "ProtocolConfig":
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol in ("subject-dependent", "cross-subject") and self.folds < 2:
            raise ValueError(f"folds must be >= 2 for {self.protocol}, got {self.folds}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if not 0.0 <= self.adapt_fraction < 1.0:
            raise ValueError(f"adapt_fraction must be in [0, 1), got {self.adapt_fraction}")
        return self


def make_folds(table: WindowTable, config: ProtocolConfig) -> list[Fold]:
    """The folds of `config.protocol` over the windows of `table` (windows with y < 0 are left out)."""
    config.validate()
    builders = {"subject-dependent": _subject_dependent, "loso": _leave_one_subject_out,
                "cross-subject": _cross_subject, "cross-corpus": _cross_corpus}
    folds = builders[config.protocol](table, config)
    for fold in folds:
        check_fold(table, fold)
    return folds


def check_fold(table: WindowTable, fold: Fold) -> None:
    """Raise if a trial or subject of `fold` sits on two sides (a second line of defence)."""
    sides = [np.asarray(getattr(fold, side)) for side in SIDES]
    for i in range(3):
        for j in range(i + 1, 3):
            if np.intersect1d(sides[i], sides[j]).size:
                raise AssertionError(f"{fold.name}: windows on both {SIDES[i]} and {SIDES[j]}")
    keys = table.subject if fold.unit == "subject" else table.trial
    owners = [set(np.asarray(keys)[s].tolist()) for s in sides]
    for i in range(3):
        for j in range(i + 1, 3):
            shared = owners[i] & owners[j]
            if shared:
                raise AssertionError(f"{fold.name}: {fold.unit} {sorted(shared)[0]!r} on both {SIDES[i]} and {SIDES[j]}")


# ---------------------------------------------------------------- groups, then windows

def _groups(table: WindowTable, unit: str, mask: np.ndarray) -> tuple[list[str], dict[str, int]]:
    """Sorted group keys among the windows in `mask` and each group's class (its most common)."""
    keys = np.asarray(table.subject if unit == "subject" else table.trial)[mask]
    labels = np.asarray(table.y)[mask]
    classes: dict[str, int] = {}
    for key in sorted(set(keys.tolist())):
        values, counts = np.unique(labels[keys == key], return_counts=True)
        classes[key] = int(values[np.argmax(counts)])
    return sorted(classes), classes


def _assemble(table: WindowTable, name: str, unit: str, side_of: dict[str, str], subject: str = "") -> Fold:
    """Windows to the side of their group: a group has one side, so a window cannot have two."""
    keys = np.asarray(table.subject if unit == "subject" else table.trial)
    labelled = np.asarray(table.y) >= 0
    side = np.array([side_of.get(key, "") for key in keys.tolist()], dtype=object)
    indices = {s: np.flatnonzero(labelled & (side == s)) for s in SIDES}
    groups = {s: sorted(k for k, v in side_of.items() if v == s) for s in SIDES}
    return Fold(name, unit, indices["train"], indices["validation"], indices["test"], groups, subject)


def _deal(keys: Sequence[str], classes: dict[str, int], k: int, rng: np.random.Generator) -> dict[str, int]:
    """Fold number of each group: every class's groups shuffled, then dealt round-robin (so each
    fold gets a share of every class), the deal continuing from class to class."""
    fold_of, position = {}, 0
    for label in sorted({classes[key] for key in keys}):
        members = [key for key in keys if classes[key] == label]
        for index in rng.permutation(len(members)):
            fold_of[members[index]] = position % k
            position += 1
    return fold_of


def _carve_validation(train: Sequence[str], classes: dict[str, int], fraction: float,
                      rng: np.random.Generator) -> set[str]:
    """Validation groups out of `train`: about `fraction` of each class's groups (at least one of a
    class with two or more, so every class is seen in training and, where possible, validated)."""
    chosen: set[str] = set()
    for label in sorted({classes[key] for key in train}):
        members = sorted(key for key in train if classes[key] == label)
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen |= {members[i] for i in rng.permutation(len(members))[:count]}
    if not chosen and len(train) >= 2:  # every class has one group: hold out one group anyway
        chosen = {sorted(train)[int(rng.integers(len(train)))]}
    return chosen


def _sides(train: Sequence[str], test: Sequence[str], validation: set[str]) -> dict[str, str]:
    side_of = {key: "test" for key in test}
    side_of.update({key: "validation" if key in validation else "train" for key in train})
    return side_of


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise ProtocolError(message)


def _labelled(table: WindowTable) -> np.ndarray:
    mask = np.asarray(table.y) >= 0
    _need(mask.any(), "no labelled window: every window's class is unknown for this label scheme")
    return mask


# ---------------------------------------------------------------- the protocols

def _subject_dependent(table: WindowTable, config: ProtocolConfig) -> list[Fold]:
    labelled = _labelled(table)
    subjects = sorted(set(np.asarray(table.subject)[labelled].tolist()))
    rng = np.random.default_rng(config.seed)
    per_subject: dict[str, tuple[list[str], dict[str, int], dict[str, int]]] = {}
    for subject in subjects:
        trials, classes = _groups(table, "trial", labelled & (np.asarray(table.subject) == subject))
        _need(len(trials) >= config.folds,
              f"subject {subject!r} has {len(trials)} labelled trials, fewer than folds={config.folds}: "
              f"subject-dependent k-fold by trial needs folds <= {len(trials)} (or leave that subject out)")
        per_subject[subject] = (trials, classes, _deal(trials, classes, config.folds, rng))
    folds = []
    for k in range(config.folds):
        pooled: dict[str, str] = {}
        for subject in subjects:
            trials, classes, fold_of = per_subject[subject]
            test = [t for t in trials if fold_of[t] == k]
            train = [t for t in trials if fold_of[t] != k]
            sides = _sides(train, test, _carve_validation(train, classes, config.validation_fraction, rng))
            if config.per_subject:
                folds.append(_assemble(table, f"{subject} fold {k + 1}/{config.folds}", "trial", sides, subject))
            else:
                pooled.update(sides)
        if not config.per_subject:
            folds.append(_assemble(table, f"fold {k + 1}/{config.folds}", "trial", pooled))
    return folds


def _subjects_with_validation(table: WindowTable, labelled: np.ndarray, config: ProtocolConfig,
                              test_subjects: list[str], subjects: list[str], name: str,
                              rng: np.random.Generator) -> Fold:
    train = [s for s in subjects if s not in test_subjects]
    count = min(len(train) - 1, max(1, round(config.validation_fraction * len(train))))
    validation = {train[i] for i in rng.permutation(len(train))[:count]}
    return _assemble(table, name, "subject", _sides(train, test_subjects, validation))


def _leave_one_subject_out(table: WindowTable, config: ProtocolConfig) -> list[Fold]:
    labelled = _labelled(table)
    subjects = sorted(set(np.asarray(table.subject)[labelled].tolist()))
    _need(len(subjects) >= 3, f"leave-one-subject-out needs >= 3 subjects (one to test, one to validate, one to "
                              f"train); the data has {len(subjects)}: {subjects}")
    rng = np.random.default_rng(config.seed)
    return [_subjects_with_validation(table, labelled, config, [s], subjects, f"subject {s}", rng) for s in subjects]


def _cross_subject(table: WindowTable, config: ProtocolConfig) -> list[Fold]:
    labelled = _labelled(table)
    subjects = sorted(set(np.asarray(table.subject)[labelled].tolist()))
    _need(len(subjects) >= config.folds + 1 and len(subjects) >= 3,
          f"cross-subject with folds={config.folds} needs >= {max(3, config.folds + 1)} subjects (each fold tests "
          f"some and validates on others); the data has {len(subjects)}: lower --folds to <= {len(subjects) - 1} "
          "or use loso")
    rng = np.random.default_rng(config.seed)
    fold_of = {subjects[i]: position % config.folds for position, i in enumerate(rng.permutation(len(subjects)))}
    return [_subjects_with_validation(table, labelled, config, [s for s in subjects if fold_of[s] == k], subjects,
                                      f"fold {k + 1}/{config.folds}", rng) for k in range(config.folds)]


def _cross_corpus(table: WindowTable, config: ProtocolConfig) -> list[Fold]:
    labelled = _labelled(table)
    roles = table.roles()
    target = labelled & (roles == "target")
    _need(target.any(), "cross-corpus: no labelled window of the target corpus")
    order = np.zeros(len(table), dtype=np.int64) if table.trial_order is None else np.asarray(table.trial_order)
    rng = np.random.default_rng(config.seed)
    adapt, test = [], []
    for subject in sorted(set(np.asarray(table.subject)[target].tolist())):
        mine = target & (np.asarray(table.subject) == subject)
        trials = sorted(set(np.asarray(table.trial)[mine].tolist()),
                        key=lambda t: (int(order[mine][np.asarray(table.trial)[mine] == t][0]), t))
        cut = math.ceil(config.adapt_fraction * len(trials)) if config.adapt_fraction > 0 else 0
        cut = min(cut, len(trials) - 1)
        adapt += trials[:cut]
        test += trials[cut:]
    source_trials, source_classes = _groups(table, "trial", labelled & (roles == "source"))
    _need(adapt or source_trials, "cross-corpus needs training data: a source corpus or adapt_fraction > 0")
    _, classes = _groups(table, "trial", target)
    carve_from = adapt if len(adapt) >= 2 else source_trials
    pool = classes if carve_from is adapt else source_classes
    validation = _carve_validation(carve_from, pool, config.validation_fraction, rng)
    side_of = _sides([*source_trials, *adapt], test, validation)
    return [_assemble(table, "target" if not source_trials else "source -> target", "trial", side_of)]


def split_document(folds: list[Fold], config: ProtocolConfig) -> dict:
    """The split as saved with the results: which trials or subjects went where in each fold."""
    return {"protocol": config.protocol, "seed": config.seed, "folds_requested": config.folds,
            "validation_fraction": config.validation_fraction, "per_subject": config.per_subject,
            "adapt_fraction": config.adapt_fraction if config.protocol == "cross-corpus" else None,
            "unit": folds[0].unit if folds else "", "folds": [fold.to_dict() for fold in folds]}
