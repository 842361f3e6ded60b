"""Each dataset layout: the synthetic writer's native files, read back through the users' readers."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from scipy.signal import find_peaks, resample_poly

from physiofm.data import RecordingRejected, read_recording, read_trials
from physiofm.data import bad_files, synthetic
from physiofm.data.channels import DEAP_EEG_32, EMOTIV_14, SEED_62
from physiofm.data.readers.matlab_layouts import SEED_IV_LABELS


def test_deap_pickle_layout_and_trials(tmp_path):
    (path,) = synthetic.write_deap(tmp_path, subjects=(7,), n_trials=3)
    assert path.relative_to(tmp_path).as_posix() == "data_preprocessed_python/s07.dat"
    raw = pickle.loads(path.read_bytes(), encoding="latin1")  # our own file: what DEAP users do
    assert raw["data"].shape == (3, 40, 8064) and raw["labels"].shape == (3, 4)
    trials = read_trials(str(path))
    assert [t.trial for t in trials] == ["01", "02", "03"] and trials[0].subject == "s07"
    first = trials[0]
    assert first.sfreq == 128.0 and first.ch_names[:32] == list(DEAP_EEG_32) and first.ch_names[36] == "GSR"
    assert first.data.shape == (40, 7680) and first.baseline.shape == (40, 384)  # 60 s + 3-s baseline apart
    assert np.allclose(np.hstack([first.baseline, first.data]), raw["data"][0])
    assert first.labels == pytest.approx(dict(zip(("valence", "arousal", "dominance", "liking"), raw["labels"][0])))
    assert first.ch_types[36] == "gsr" and first.label == -1


def test_hostile_pickle_is_rejected_without_running_its_payload(tmp_path):
    marker = tmp_path / "payload-ran"
    path = bad_files.hostile_pickle(tmp_path / "s01.dat", marker)
    with pytest.raises(RecordingRejected, match=r"hostile or foreign pickle rejected unexecuted: forbidden global io\.open"):
        read_trials(str(path))
    assert not marker.exists()
    # The payload is live: plain pickle.load (in another process) does create the file.
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads(open({str(path)!r}, 'rb').read())"],
                   check=True, capture_output=True)
    assert marker.exists()


def test_seed_layout_labels_from_label_mat(tmp_path):
    (path,) = synthetic.write_seed(tmp_path, subjects=(3,), trial_s=2.0)
    assert path.relative_to(tmp_path).as_posix() == "Preprocessed_EEG/3_20140411.mat"
    names = sorted(n for n, _, _ in scipy.io.whosmat(path))
    assert len(names) == 15 and all("_eeg" in n for n in names)
    trials = read_trials(str(path))
    assert len(trials) == 15 and [t.trial for t in trials[:3]] == ["1", "2", "3"]
    assert trials[0].data.shape == (62, 400) and trials[0].ch_names == list(SEED_62) and trials[0].sfreq == 200.0
    assert [t.label for t in trials] == [v + 1 for v in synthetic.SEED_LABELS]  # -1/0/1 → 0/1/2
    assert trials[0].subject == "3" and trials[0].session == "20140411"
    (path.parent / "label.mat").unlink()
    assert {t.label for t in read_trials(str(path))} == {-1}
    assert "label.mat not found" in read_trials(str(path))[0].meta["notes"][0]


def test_seed_iv_layout_labels_by_session(tmp_path):
    paths = synthetic.write_seediv(tmp_path, sessions=(1, 3), subjects=(2,), trial_s=1.0)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "eeg_raw_data/1/2_20180611.mat", "eeg_raw_data/3/2_20180613.mat"]
    for session, path in zip(("1", "3"), paths):
        trials = read_trials(str(path))
        assert len(trials) == 24 and trials[0].dataset == "seediv" and trials[0].session == session
        assert [t.label for t in trials] == list(SEED_IV_LABELS[session])


def test_dreamer_struct_and_its_real_ecg(tmp_path):
    path = synthetic.write_dreamer(tmp_path, n_subjects=2, n_trials=3, stimulus_s=4.0, baseline_s=2.0)
    root = scipy.io.loadmat(path)["DREAMER"][0, 0]
    written_ecg = root["Data"][0, 1]["ECG"][0, 0]["stimuli"][0, 0][2, 0]  # the spec's access path
    assert written_ecg.shape == (1024, 2) and root["Data"][0, 1]["EEG"][0, 0]["stimuli"][0, 0][2, 0].shape == (512, 14)
    trials = read_trials(str(path))
    assert len(trials) == 6 and (trials[5].subject, trials[5].trial) == ("02", "03")
    rec = trials[5]
    assert rec.ch_names == [*EMOTIV_14, "ECG1", "ECG2"] and rec.sfreq == 128.0 and rec.data.shape == (16, 512)
    assert np.allclose(rec.data[14:], resample_poly(written_ecg.T, 1, 2, axis=1))  # ECG, not EEG, at 128 Hz
    assert rec.baseline.shape == (16, 256)
    scores = root["Data"][0, 1]["ScoreValence"][0, 0]
    assert rec.labels["valence"] == scores[2, 0] and set(rec.labels) == {"valence", "arousal", "dominance"}


def test_amigos_layout_skips_empty_trials(tmp_path):
    (path,) = synthetic.write_amigos(tmp_path, participants=(5,), n_trials=4, trial_s=2.0, empty_trials=(2,))
    assert path.name == "Data_Preprocessed_P05.mat"
    trials = read_trials(str(path))
    assert [t.trial for t in trials] == ["01", "03", "04"] and trials[0].subject == "P05"
    assert trials[0].data.shape == (17, 256) and trials[0].ch_types[-3:] == ["ecg", "ecg", "gsr"]
    assert trials[0].meta["notes"] == ["empty trials skipped: [2]"] and len(trials[0].labels) == 12


def test_tueg_tree_and_channel_names(tmp_path):
    paths = synthetic.write_tueg(tmp_path, n_subjects=2, duration_s=10.0, montage="02_tcp_le")
    assert paths[1].relative_to(tmp_path).as_posix() == "edf/000/aaaaaaab/s001_2015/02_tcp_le/aaaaaaab_s001_t000.edf"
    rec = read_recording(str(paths[1]))
    assert rec.ch_names[0] == "EEG FP1-LE" and rec.ch_names[-1] == "EEG EKG1-LE"
    assert (rec.subject, rec.session, rec.trial, rec.dataset) == ("aaaaaaab", "s001", "t000", "tueg")
    assert rec.sfreq == 250.0 and rec.duration_s == 10.0
    occipital, frontal = rec.ch_names.index("EEG O1-LE"), rec.ch_names.index("EEG FP1-LE")
    spectrum = np.abs(np.fft.rfft(rec.data, axis=1)) ** 2
    freqs = np.fft.rfftfreq(rec.n_samples, 1 / rec.sfreq)
    alpha = (freqs > 8) & (freqs < 12)
    assert spectrum[occipital, alpha].sum() > 2 * spectrum[frontal, alpha].sum()  # occipital alpha rhythm


def test_ptbxl_tree_reads_as_twelve_lead_mv(tmp_path):
    paths = synthetic.write_ptbxl(tmp_path, n_records=2)
    assert paths[0].relative_to(tmp_path).as_posix() == "records500/00000/00001_hr.hea"
    assert (tmp_path / "records500/00000/00001_hr.dat").stat().st_size == 5000 * 12 * 2
    rec = read_recording(str(paths[0]))
    assert rec.dataset == "ptbxl" and rec.sfreq == 500.0 and rec.data.shape == (12, 5000)
    lead_ii = np.abs(rec.data[1])
    peaks, _ = find_peaks(lead_ii, height=0.5 * lead_ii.max(), distance=int(0.3 * rec.sfreq))
    assert 8 <= len(peaks) <= 17  # 10 s of QRS complexes at 55-95 bpm
    assert 0.3 < lead_ii.max() < 3.0  # in mV


def test_writers_are_seeded(tmp_path):
    a = synthetic.write_deap(tmp_path / "a", n_trials=1, seed=4)[0].read_bytes()
    b = synthetic.write_deap(tmp_path / "b", n_trials=1, seed=4)[0].read_bytes()
    c = synthetic.write_deap(tmp_path / "c", n_trials=1, seed=5)[0].read_bytes()
    assert a == b and a != c


@pytest.mark.parametrize("make, reason", [
    (lambda d, good: bad_files.truncated(good, d / "t.edf", 0.6), r"truncated EDF file"),
    (lambda d, good: bad_files.bit_flipped(good, d / "f.edf"),
     r"EDF header field 'number of data records' \(bytes 236-243\) is not ASCII text"),
    (lambda d, good: bad_files.empty(d / "e.edf"), r"empty file \(0 bytes\)"),
    (lambda d, good: bad_files.wrong_extension(synthetic.write_deap(d, n_trials=1)[0], d / "w.edf"),
     r"not a readable EDF file"),
    (lambda d, good: bad_files.wrong_extension(good, d / "w.xyz"), r"unsupported extension '\.xyz'"),
])
def test_bad_files_are_rejected_with_specific_reasons(tmp_path, make, reason):
    good = synthetic.write_tueg(tmp_path / "good", n_subjects=1, duration_s=4.0)[0]
    with pytest.raises(RecordingRejected, match=reason):
        read_trials(str(make(tmp_path, good)))
