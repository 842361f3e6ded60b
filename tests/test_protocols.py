"""Protocols: over random trial / window / subject layouts, no trial (subject-dependent, cross-corpus)
and no subject (LOSO, cross-subject) crosses the train/test boundary, and the validation split
used for model selection comes from the training side only."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from physiofm.evaluation import ProtocolConfig, ProtocolError, WindowTable, make_folds, split_document
from physiofm.evaluation.protocols import Fold, check_fold


@st.composite
def layouts(draw):
    """Subjects with random numbers of trials, windows per trial, classes per trial (some
    unlabelled), and, for cross-corpus, a source corpus beside the target."""
    n_subjects = draw(st.integers(3, 7))
    n_classes = draw(st.integers(2, 4))
    subject, trial, y, role, order = [], [], [], [], []
    for s in range(n_subjects):
        source = draw(st.booleans()) and s >= 3
        for t in range(draw(st.integers(4, 10))):
            label = draw(st.integers(-1 if t else 0, n_classes - 1))  # -1: a trial the scheme cannot label
            for _ in range(draw(st.integers(1, 4))):
                subject.append(f"s{s}")
                trial.append(f"s{s}/{t}")
                y.append(label)
                role.append("source" if source else "target")
                order.append(t)
    table = WindowTable(np.array(subject, dtype=object), np.array(trial, dtype=object), np.array(y),
                        np.array(role, dtype=object), np.array(order))
    return table


def owners(table: WindowTable, fold: Fold, side: str, unit: str) -> set[str]:
    keys = table.subject if unit == "subject" else table.trial
    return set(keys[getattr(fold, side)].tolist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layout=layouts(), protocol=st.sampled_from(["subject-dependent", "loso", "cross-subject", "cross-corpus"]),
       k=st.integers(2, 4), seed=st.integers(0, 2**16), fraction=st.floats(0.1, 0.5), per_subject=st.booleans())
def test_no_trial_or_subject_crosses_the_boundary_and_validation_is_carved_from_training(
        layout, protocol, k, seed, fraction, per_subject):
    config = ProtocolConfig(protocol, folds=k, seed=seed, validation_fraction=fraction, per_subject=per_subject)
    try:
        folds = make_folds(layout, config)
    except ProtocolError as err:  # too few trials or subjects for this k: refused with a reason, never leaky
        assert "needs" in str(err) or "fewer than" in str(err)
        return
    labelled = np.flatnonzero(layout.y >= 0)
    unit = "subject" if protocol in ("loso", "cross-subject") else "trial"
    tested = []
    for fold in folds:
        sides = {side: owners(layout, fold, side, unit) for side in ("train", "validation", "test")}
        assert not sides["train"] & sides["test"] and not sides["validation"] & sides["test"]
        assert not sides["train"] & sides["validation"]
        # trials never straddle, whatever the unit: a subject on one side takes all its trials
        trial_sides = {side: owners(layout, fold, side, "trial") for side in sides}
        assert not trial_sides["train"] & trial_sides["test"] and not trial_sides["validation"] & trial_sides["test"]
        # validation comes out of what is not tested: its groups are training-side groups by construction
        everything = set(fold.train) | set(fold.validation) | set(fold.test)
        assert everything <= set(labelled.tolist())
        assert len(fold.validation) > 0 or len(fold.train) > 0
        if protocol != "cross-corpus":
            covered = sides["train"] | sides["validation"] | sides["test"]
            pool = layout.subject if unit == "subject" else layout.trial
            expected = set(pool[labelled].tolist())
            if fold.subject:
                expected = {key for key in expected if key.startswith(fold.subject + "/") or key == fold.subject}
            assert covered == expected  # every labelled window of the fold's scope is on exactly one side
        split = fold.to_dict()
        assert set(split["test"]) == sides["test"] and set(split["validation"]) == sides["validation"]
        tested += layout.trial[fold.test].tolist()
    if protocol in ("subject-dependent", "loso", "cross-subject"):
        windows = [i for fold in folds for i in fold.test]
        assert sorted(windows) == sorted(labelled.tolist())  # every labelled window is tested exactly once
    if protocol == "loso":
        assert [sorted(owners(layout, f, "test", "subject")) for f in folds] == \
            [[s] for s in sorted(set(layout.subject[labelled].tolist()))]
    if protocol == "cross-corpus":
        (fold,) = folds
        assert (layout.roles()[fold.test] == "target").all()  # the source never tests
        for trial in set(tested):  # a subject's test trials come after its adaptation trials
            mine = layout.subject[layout.trial == trial][0]
            adapt = {t for t in layout.trial[np.r_[fold.train, fold.validation]].tolist()
                     if layout.subject[layout.trial == t][0] == mine}
            order = {t: int(layout.trial_order[layout.trial == t][0]) for t in adapt | {trial}}
            assert all(order[a] < order[trial] for a in adapt)
    document = split_document(folds, config)
    assert document["protocol"] == protocol and len(document["folds"]) == len(folds)


def small_table(subjects=4, trials=6, windows=3) -> WindowTable:
    subject = np.repeat([f"s{s}" for s in range(subjects)], trials * windows)
    trial = np.array([f"s{s}/{t}" for s in range(subjects) for t in range(trials) for _ in range(windows)])
    y = np.array([t % 2 for s in range(subjects) for t in range(trials) for _ in range(windows)])
    return WindowTable(subject.astype(object), trial.astype(object), y)


def test_subject_dependent_folds_are_stratified_and_seeded():
    table = small_table()
    first = make_folds(table, ProtocolConfig("subject-dependent", folds=3, seed=5))
    again = make_folds(table, ProtocolConfig("subject-dependent", folds=3, seed=5))
    other = make_folds(table, ProtocolConfig("subject-dependent", folds=3, seed=6))
    assert [f.to_dict() for f in first] == [f.to_dict() for f in again]
    assert [f.to_dict() for f in first] != [f.to_dict() for f in other]
    for fold in first:  # each subject's test trials hold both classes (3 of each class dealt over 3 folds)
        for s in range(4):
            mine = table.subject[fold.test] == f"s{s}"
            assert set(table.y[fold.test][mine].tolist()) == {0, 1}
        assert len(fold.validation) > 0


def test_protocols_the_data_cannot_support_are_refused_with_the_numbers():
    with pytest.raises(ProtocolError, match=r"subject 's0' has 6 labelled trials, fewer than folds=7"):
        make_folds(small_table(), ProtocolConfig("subject-dependent", folds=7))
    with pytest.raises(ProtocolError, match=r"leave-one-subject-out needs >= 3 subjects .* has 2"):
        make_folds(small_table(subjects=2), ProtocolConfig("loso"))
    with pytest.raises(ProtocolError, match=r"cross-subject with folds=4 needs >= 5 subjects"):
        make_folds(small_table(), ProtocolConfig("cross-subject", folds=4))
    with pytest.raises(ValueError, match="protocol must be one of"):
        make_folds(small_table(), ProtocolConfig("k-fold-by-window"))


def test_a_leaky_fold_is_caught():
    table = small_table()
    leaky = Fold("leaky", "trial", train=np.array([0, 1]), validation=np.array([], dtype=int), test=np.array([2]))
    with pytest.raises(AssertionError, match=r"trial 's0/0' on both train and test"):
        check_fold(table, leaky)  # windows 0-2 are three seconds of one trial
