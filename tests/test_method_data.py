"""What SCMM and PhysioSync get from the data pipeline: channels aligned by 10-20 name, min-max fitted
on the training side only, stimulus segments of every subject, trial-level splits, DREAMER's real ECG.

Corpora are the synthetic native layouts prepared by the real pipeline on the session's Ray.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from scipy.signal import resample_poly

from physiofm.data import get_preset, read_trials, read_windows, synthetic
from physiofm.data.channels import DEAP_EEG_32, SEED_62
from physiofm.data.loader import training_dataset
from physiofm.data.splits import split_by_group
from physiofm.platform.config import ConfigError, TrainConfig

SYNC_COLUMNS = ["eeg", "peripheral", "dataset", "session", "trial", "window_index", "subject", "recording"]


def prepared(root, preset: str) -> str:
    from physiofm.data.pipeline import prepare_corpus

    prepare_corpus([str(root / "raw")], str(root / "windows"), preset=preset, progress=lambda line: None)
    return str(root / "windows")


@pytest.fixture(scope="module")
def deap_corpus(ray_local, tmp_path_factory):
    """Subjects s01-s03 saw trials 01-04; s04 only 01-03, so trial 04's segments lack a subject."""
    root = tmp_path_factory.mktemp("deap")
    synthetic.write_deap(root / "raw", subjects=(1, 2, 3), n_trials=4)
    synthetic.write_deap(root / "raw", subjects=(4,), n_trials=3)
    return prepared(root, "physiosync")


@pytest.fixture(scope="module")
def deap_windows(deap_corpus):
    """The corpus's windows held in Ray's object store, as the trainer holds a small corpus
    (`data.in_memory_mb`): each test's passes then read memory, not the Parquet files again."""
    return training_dataset(deap_corpus, columns=SYNC_COLUMNS).materialize()


def physiosync(**method):
    cfg = TrainConfig.from_dict({"method": {"name": "physiosync", **method}, "data": {"corpus": "x"}})
    cfg.method.check_corpus({"eeg": (32, 640), "peripheral": (1, 640)})
    return cfg


def test_seed_channels_align_to_deap_by_name_in_any_file_order(tmp_path):
    seed = read_trials(str(synthetic.write_seed(tmp_path, trial_s=3.0)[0]))[0]
    full = get_preset("scmm-de")(seed).tensors["x"]
    aligned = get_preset("scmm-de-deap32")(seed).tensors["x"]
    by_name = [SEED_62.index(name.upper()) for name in DEAP_EEG_32]
    assert aligned.shape == (3, 32, 5)
    np.testing.assert_allclose(aligned, full[:, by_name], rtol=1e-6)
    assert not np.allclose(aligned, full[:, :32])  # not the first 32 rows
    shuffled = seed.pick(np.random.default_rng(0).permutation(62))  # same signals, another channel order
    assert shuffled.ch_names != seed.ch_names
    np.testing.assert_allclose(get_preset("scmm-de-deap32")(shuffled).tensors["x"], aligned, rtol=1e-6)
    deap = read_trials(str(synthetic.write_deap(tmp_path, n_trials=1)[0]))[0]
    deap_x = get_preset("scmm-de-deap32")(deap).tensors["x"]
    assert deap_x.shape == (60, 32, 5)
    shuffled_deap = deap.pick(np.random.default_rng(1).permutation(40))
    np.testing.assert_allclose(get_preset("scmm-de-deap32")(shuffled_deap).tensors["x"], deap_x, rtol=1e-6)


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_scmm_min_max_is_fitted_on_the_training_side_only(ray_local, tmp_path):
    synthetic.write_seed(tmp_path / "raw", subjects=(1, 2), trial_s=3.0)
    corpus = prepared(tmp_path, "scmm-de")
    cfg = TrainConfig.from_dict({"method": {"name": "scmm"}, "data": {"corpus": corpus}})
    cfg.method.check_corpus({"x": (62, 5)})
    train, validation, held_out = split_by_group(training_dataset(corpus, columns=["x", "recording"]).materialize(),
                                                 ["recording"], 0.5, seed=0)
    streamed = cfg.method.prepare_datasets({"train": train, "validation": validation}, ["x"])
    assert set(streamed["train"].columns()) == {"x"}

    windows = read_windows(corpus, columns=["x", "recording"])
    is_train = ~np.isin(windows["recording"], sorted(held_out))
    assert 0 < is_train.sum() < len(is_train)
    flat = windows["x"].reshape(len(is_train), -1)
    np.testing.assert_array_equal(cfg.method.feature_min, flat[is_train].min(axis=0))
    np.testing.assert_array_equal(cfg.method.feature_max, flat[is_train].max(axis=0))
    assert not np.array_equal(cfg.method.feature_max, flat.max(axis=0))  # validation windows left out

    import torch

    objective = TrainConfig.from_dict(cfg.to_dict()).method.build()  # as on a worker
    scaled_train = objective.scaling(torch.from_numpy(windows["x"][is_train]))
    scaled_validation = objective.scaling(torch.from_numpy(windows["x"][~is_train]))
    assert scaled_train.min() == 0.0 and scaled_train.max() == 1.0
    assert scaled_validation.min() < 0.0 or scaled_validation.max() > 1.0  # scaled with the train fit, not refit


def segment_rows(ds) -> dict[str, np.ndarray]:
    rows = ds.take_all()
    return {name: np.stack([row[name] for row in rows]) for name in ("eeg", "peripheral")}


def test_segments_stack_every_subject_of_a_stretch_and_split_by_trial(deap_corpus, deap_windows, capsys):
    cfg = physiosync(resolution="long")
    by = list(cfg.data.validation_by)
    train, validation, held_out = split_by_group(deap_windows, by, 0.25, seed=0)
    sides = {"train": train.select_columns(["trial", "subject"]).to_pandas(),
             "validation": validation.select_columns(["trial", "subject"]).to_pandas()}
    assert not set(sides["train"]["trial"]) & set(sides["validation"]["trial"])  # no trial on both sides
    assert len(sides["train"]) + len(sides["validation"]) == 3 * 4 * 12 + 3 * 12
    assert set(sides["validation"]["trial"]) == {"03"}, held_out  # seed 0 holds out one complete trial

    segments = cfg.method.prepare_datasets({"train": train, "validation": validation}, ["eeg", "peripheral"])
    printed = capsys.readouterr().out
    assert "physiosync train: 24 segments of all 4 subjects; 12 segments dropped" in printed  # trial 04 lacks s04
    assert "physiosync validation: 12 segments of all 4 subjects; 0 segments dropped" in printed
    rows = segment_rows(segments["validation"])
    assert rows["eeg"].shape == (12, 4, 32, 640) and rows["peripheral"].shape == (12, 4, 1, 640)

    windows = read_windows(deap_corpus, columns=["eeg", "peripheral", "trial", "window_index", "subject"])
    for segment in rows["eeg"][:3]:
        first = np.flatnonzero([np.array_equal(segment[0], w) for w in windows["eeg"]])
        assert len(first) == 1 and windows["subject"][first[0]] == "s01"
        same = (windows["trial"] == windows["trial"][first[0]]) & (
            windows["window_index"] == windows["window_index"][first[0]])
        order = np.argsort(windows["subject"][same])
        assert windows["trial"][first[0]] == "03"
        np.testing.assert_array_equal(segment, windows["eeg"][same][order])  # subjects s01..s04 in order


def test_short_resolution_cuts_each_segment_into_five_one_second_segments(deap_corpus, deap_windows):
    cfg = physiosync(resolution="short")
    short = segment_rows(cfg.method.prepare_datasets(
        {"train": deap_windows}, ["eeg", "peripheral"])["train"])
    assert short["eeg"].shape == (36 * 5, 4, 32, 128) and short["peripheral"].shape == (180, 4, 1, 128)

    windows = read_windows(deap_corpus, columns=["peripheral", "trial", "window_index", "subject"])
    expected = set()
    for trial in ("01", "02", "03"):  # the complete trials
        for index in range(12):
            same = (windows["trial"] == trial) & (windows["window_index"] == index)
            segment = windows["peripheral"][same][np.argsort(windows["subject"][same])]  # (4, 1, 640)
            expected |= {np.ascontiguousarray(segment[..., k * 128:(k + 1) * 128]).tobytes() for k in range(5)}
    assert {row.tobytes() for row in short["peripheral"]} == expected and len(expected) == 180


def test_a_split_that_puts_one_trial_on_both_sides_is_refused(deap_windows):
    cfg = physiosync()
    train, validation, _ = split_by_group(deap_windows, ["subject"], 0.25)
    with pytest.raises(ConfigError, match=r"physiosync: 4 trials have windows in both training and validation .*"
                                          r"data.validation_by: \['dataset', 'session', 'trial'\]"):
        cfg.method.prepare_datasets({"train": train, "validation": validation}, ["eeg", "peripheral"])


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_dreamer_peripheral_windows_are_its_real_ecg(ray_local, tmp_path):
    path = synthetic.write_dreamer(tmp_path / "raw", n_subjects=1, n_trials=2, stimulus_s=10.0)
    windows = read_windows(prepared(tmp_path, "physiosync"), columns=["eeg", "peripheral", "trial", "window_index"])
    assert windows["eeg"].shape == (4, 14, 640) and windows["peripheral"].shape == (4, 2, 640)
    subject = scipy.io.loadmat(path)["DREAMER"][0, 0]["Data"][0, 0]
    ecg, eeg = subject["ECG"][0, 0], subject["EEG"][0, 0]
    stimulus = resample_poly(ecg["stimuli"][0, 0][1, 0].T, 1, 2, axis=1)  # trial 2, 256 -> 128 Hz
    baseline = resample_poly(ecg["baseline"][0, 0][1, 0].T, 1, 2, axis=1)
    per_second = baseline[:, : baseline.shape[1] // 128 * 128].reshape(2, -1, 128).mean(axis=1)
    expected = stimulus[:, 640:1280] - np.tile(per_second, 5)  # the second 5-s window, baseline removed
    row = np.flatnonzero((windows["trial"] == "02") & (windows["window_index"] == 1))[0]
    np.testing.assert_allclose(windows["peripheral"][row], expected, rtol=1e-4, atol=1e-5)
    raw_eeg = eeg["stimuli"][0, 0][1, 0].T[:, 640:1280]
    for lead in windows["peripheral"][row]:
        assert max(abs(np.corrcoef(lead, channel)[0, 1]) for channel in raw_eeg) < 0.5  # no EEG in its place
