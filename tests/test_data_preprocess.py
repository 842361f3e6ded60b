"""Preprocessing steps and presets: numbers, shapes and rejection reasons."""
from __future__ import annotations

import numpy as np
import pytest

from physiofm.data import RecordingRejected, read_trials, synthetic
from physiofm.data.channels import CBRAMOD_19, canonical_eeg, canonical_lead
from physiofm.data.presets import get_preset
from physiofm.data.recording import Recording
from physiofm.data.steps import (BandPass, Crop, FillAbsentChannels, Notch, RemoveBaseline, RepairNaN, Resample, Scale,
                                 SelectChannels, ZScoreAcrossChannels)
from physiofm.data.windows import DEFeatures, PatchWindows


def make(data, sfreq=200.0, names=None, types=None, units=None, **kw) -> Recording:
    data = np.atleast_2d(np.asarray(data, dtype=float))
    n = data.shape[0]
    return Recording(data=data, ch_names=names or [f"C{i}" for i in range(n)], ch_types=types or ["eeg"] * n,
                     units=units or ["uV"] * n, sfreq=sfreq, source="mem", dataset="test", **kw)


def sine(freq, sfreq, seconds, amplitude=1.0):
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(seconds * sfreq)) / sfreq)


def gain(before, after, sfreq, freq):
    """Amplitude ratio at `freq` between two signals (middle half, away from filter edges)."""
    def amplitude(x):
        x = x[len(x) // 4: 3 * len(x) // 4]
        t = np.arange(len(x)) / sfreq
        return np.abs(np.dot(x, np.exp(-2j * np.pi * freq * t))) * 2 / len(x)
    return amplitude(after) / amplitude(before)


@pytest.mark.parametrize("label, name", [("EEG FP1-REF", "FP1"), ("EEG Fp1", "FP1"), ("FP1-LE", "FP1"),
                                         ("Fp1.", "FP1"), ("EEG T3-LE", "T3"), ("Cz", "CZ")])
def test_eeg_labels_canonicalise(label, name):
    assert canonical_eeg(label) == name


@pytest.mark.parametrize("label, lead", [("ii", "II"), ("ECG II", "II"), ("MLII", "II"), ("avr", "aVR"),
                                         ("AVF", "aVF"), ("v6", "V6"), ("V", None), ("ECG ECG", None)])
def test_ecg_leads_canonicalise(label, lead):
    assert canonical_lead(label) == lead


def test_channel_selection_orders_rejects_or_masks():
    names = ["EEG Cz-REF", "EEG O1-REF", "EEG T7-REF", "EEG FP1-REF"]
    rec = make(np.arange(4)[:, None] * np.ones((4, 10)), names=names)
    picked = SelectChannels(("FP1", "T3", "CZ"))(rec)  # T3 found under its 10-10 name T7
    assert picked.ch_names == ["FP1", "T3", "CZ"] and picked.data[:, 0].tolist() == [3, 2, 0]
    with pytest.raises(RecordingRejected, match=r"missing channels \['O2', 'PZ'\] \(required: \['FP1', 'O2', 'PZ'\]\)"):
        SelectChannels(("FP1", "O2", "PZ"))(rec)
    leads = make(np.ones((2, 10)), names=["MLII", "V5"], types=["ecg"] * 2, units=["mV"] * 2)
    partial = SelectChannels(("I", "II", "V5"), kind="ecg", missing="zero_fill")(leads)
    filled = FillAbsentChannels()(partial)
    assert filled.ch_names == ["I", "II", "V5"] and filled.meta["channel_mask"] == [False, True, True]
    assert filled.data[:, 0].tolist() == [0, 1, 1]
    with pytest.raises(RecordingRejected, match=r"none of the ecg channels \['V1'\] found"):
        SelectChannels(("V1",), kind="ecg", missing="zero_fill")(leads)


def test_resample_is_polyphase_and_keeps_rhythms():
    rec = make(sine(10, 500, 4.0, 20.0), sfreq=500)
    out = Resample(200)(rec)
    assert out.sfreq == 200 and out.n_samples == 800 and out.meta["source_sfreq"] == 500
    assert gain(sine(10, 200, 4.0, 20.0), out.data[0], 200, 10) == pytest.approx(1.0, abs=0.01)
    odd = Resample(200)(make(np.zeros((1, 4960)), sfreq=496))  # drivedb's 496 Hz
    assert odd.n_samples == 2000


def test_band_pass_and_notch_attenuate_what_they_should():
    sfreq = 200.0
    mixed = sine(0.05, sfreq, 60) + sine(10, sfreq, 60) + sine(60, sfreq, 60) + sine(90, sfreq, 60)
    band = BandPass(0.3, 75)(make(mixed, sfreq)).data[0]
    assert gain(sine(10, sfreq, 60), band, sfreq, 10) == pytest.approx(1.0, abs=0.01)
    assert gain(sine(90, sfreq, 60), band, sfreq, 90) < 0.1
    assert gain(sine(0.05, sfreq, 60), band, sfreq, 0.05) < 0.2
    notched = Notch(60)(make(mixed, sfreq)).data[0]
    assert gain(sine(60, sfreq, 60), notched, sfreq, 60) < 0.03  # > 30 dB down
    assert gain(sine(40, sfreq, 60), Notch(60)(make(sine(40, sfreq, 60), sfreq)).data[0], sfreq, 40) > 0.98
    assert Notch(60)(make(mixed, 100.0)).data is not None  # above Nyquist: left alone


def test_scale_converts_units_then_applies_the_factor():
    rec = make([[50e-6], [2.0], [3.0]], names=["a", "b", "c"], types=["eeg", "ecg", "gsr"], units=["V", "mv", "NU"])
    eeg = Scale("uV", factor=0.01, types=("eeg",))(rec)
    assert eeg.data[:, 0] == pytest.approx([0.5, 2.0, 3.0]) and eeg.units == ["uV", "mv", "NU"]
    ecg = Scale("mV", types=("ecg",))(rec)
    assert ecg.data[1, 0] == pytest.approx(2.0) and ecg.units[1] == "mV"
    with pytest.raises(RecordingRejected, match=r"cannot scale units \['NU'\] to uV"):
        Scale("uV", types=("gsr",))(rec)


def test_deap_baseline_removal_matches_its_definition():
    rng = np.random.default_rng(0)
    baseline, trial = rng.normal(size=(2, 3 * 128)), rng.normal(size=(2, 60 * 128))
    out = RemoveBaseline(1.0)(make(trial, 128.0, baseline=baseline))
    mean_second = baseline.reshape(2, 3, 128).mean(axis=1)
    expected = (trial.reshape(2, 60, 128) - mean_second[:, None]).reshape(2, -1)
    assert np.allclose(out.data, expected) and out.baseline is None
    assert RemoveBaseline()(make(trial, 128.0)).data is not None  # no baseline: unchanged


def test_crop_rejects_short_recordings_and_shifts_window_starts():
    rec = make(np.zeros((1, 200 * 100)))
    with pytest.raises(RecordingRejected, match=r"too short: 100.0 s < minimum 300 s"):
        Crop(min_duration_s=300)(rec)
    cropped = Crop(trim_s=10)(rec)
    assert cropped.duration_s == 80 and cropped.meta["offset_s"] == 10
    windows = PatchWindows(window_s=30)(cropped)
    assert windows.start_s.tolist() == [10.0, 40.0]


def test_patch_windows_shape_and_amplitude_rejection():
    data = np.zeros((3, 200 * 40))
    data[1, 200 * 12] = 5.0  # a spike in window 1 of 4
    windows = PatchWindows(window_s=10, patch_s=1, max_abs=1.0)(make(data))
    assert windows.tensors["x"].shape == (3, 3, 10, 200) and windows.tensors["x"].dtype == np.float32
    assert windows.index.tolist() == [0, 2, 3] and windows.start_s.tolist() == [0.0, 20.0, 30.0]
    assert windows.n_rejected == 1
    ramp = make(np.arange(400, dtype=float)[None])
    x = PatchWindows(window_s=2, patch_s=1)(ramp).tensors["x"]
    assert x[0, 0, 1, 0] == 200  # patches are consecutive seconds of the window


def test_repair_nan_interpolates_short_gaps_and_rejects_long_ones():
    data = np.linspace(0, 1, 1000)[None].repeat(2, 0)
    data[0, 100:103] = np.nan
    repaired = RepairNaN(max_gap_s=0.1)(make(data.copy(), 200.0))
    assert np.allclose(repaired.data, np.linspace(0, 1, 1000)) and repaired.meta["nan_interpolated"] == 3
    data[1, 500:540] = np.nan
    with pytest.raises(RecordingRejected, match=r"NaN gap of 0.20 s \(limit 0.1 s\)"):
        RepairNaN(max_gap_s=0.1, max_fraction=0.05)(make(data.copy(), 200.0))
    with pytest.raises(RecordingRejected, match=r"NaN samples: 43 \(2.1% of the signal; policy interpolate, limit 1.0%\)"):
        RepairNaN(max_gap_s=0.1)(make(data.copy(), 200.0))
    with pytest.raises(RecordingRejected, match=r"NaN samples: 2000 \(100.0% of the signal"):
        RepairNaN()(make(np.full((2, 1000), np.nan)))


def test_differential_entropy_of_band_limited_signals():
    sfreq, seconds = 200.0, 20
    amplitude = 10.0
    rec = make(np.vstack([sine(10, sfreq, seconds, amplitude), sine(20, sfreq, seconds, amplitude)]), sfreq)
    x = DEFeatures()(rec).tensors["x"]
    assert x.shape == (20, 2, 5)
    alpha_de = 0.5 * np.log(2 * np.pi * np.e * amplitude**2 / 2)  # variance of a sine: A²/2
    assert np.median(x[:, 0, 2]) == pytest.approx(alpha_de, abs=0.05)
    assert np.median(x[:, 1, 3]) == pytest.approx(alpha_de, abs=0.05)  # 20 Hz lies in beta
    assert (x[5:-5, 0, 0] < alpha_de - 3).all()  # delta of a 10 Hz sine (away from the filter's edges)


def test_z_score_across_channels_per_sample():
    rng = np.random.default_rng(1)
    rec = make(rng.normal(5, 3, size=(4, 100)), types=["eeg", "eeg", "eeg", "gsr"])
    out = ZScoreAcrossChannels()(rec)
    assert np.allclose(out.data[:3].mean(axis=0), 0) and np.allclose(out.data[:3].std(axis=0), 1)
    assert np.array_equal(out.data[3], rec.data[3])


def test_cbramod_preset_on_a_tueg_recording(tmp_path):
    (path,) = synthetic.write_tueg(tmp_path, n_subjects=1, duration_s=70.0)
    (rec,) = read_trials(str(path))
    windows = get_preset("cbramod-eeg", min_duration_s=60, trim_s=5)(rec)
    x = windows.tensors["x"]
    assert x.shape == (2, 19, 30, 200) and windows.start_s.tolist() == [5.0, 35.0]
    assert np.abs(x).max() < 1.0 and x.std() > 0.02  # µV/100, under the 100 µV limit
    strict = get_preset("cbramod-eeg", min_duration_s=60, trim_s=5, max_abs_uv=5)(rec)
    assert len(strict) == 0 and strict.n_rejected == 2
    dropped = synthetic.write_tueg(tmp_path / "o", n_subjects=1, duration_s=70.0, drop=("O1", "O2"))[0]
    with pytest.raises(RecordingRejected, match=r"missing channels \['O1', 'O2'\]"):
        get_preset("cbramod-eeg")(read_trials(str(dropped))[0])
    assert len(CBRAMOD_19) == 19


def test_emotion_presets_shapes(tmp_path):
    deap = read_trials(str(synthetic.write_deap(tmp_path, n_trials=1)[0]))[0]
    sync = get_preset("physiosync")(deap)
    assert sync.tensors["eeg"].shape == (12, 32, 640) and sync.tensors["peripheral"].shape == (12, 1, 640)
    eeg = sync.tensors["eeg"]
    assert np.allclose(eeg.mean(axis=1), 0, atol=1e-5) and np.allclose(eeg.std(axis=1), 1, atol=1e-3)
    dreamer = read_trials(str(synthetic.write_dreamer(tmp_path, n_subjects=1, n_trials=1, stimulus_s=10.0)))[0]
    both = get_preset("physiosync")(dreamer)
    assert both.tensors["eeg"].shape == (2, 14, 640) and both.tensors["peripheral"].shape == (2, 2, 640)
    seed = read_trials(str(synthetic.write_seed(tmp_path, trial_s=3.0)[0]))[0]
    assert get_preset("scmm-de")(seed).tensors["x"].shape == (3, 62, 5)
    assert get_preset("scmm-de-deap32")(seed).tensors["x"].shape == (3, 32, 5)
    assert get_preset("scmm-de-deap32")(deap).tensors["x"].shape == (60, 32, 5)
    with pytest.raises(RecordingRejected, match=r"missing channels \['FPZ'"):
        get_preset("scmm-de")(deap)


def test_step_options_are_validated_with_the_allowed_values():
    with pytest.raises(ValueError, match=r"missing must be one of \('reject', 'zero_fill'\), got 'drop'"):
        SelectChannels(("FP1",), missing="drop")
    with pytest.raises(ValueError, match=r"policy must be one of \('interpolate', 'reject'\), got 'zero'"):
        RepairNaN(policy="zero")
    with pytest.raises(ValueError, match=r"unit must be one of \('v', 'mv', 'uv'"):
        Scale("mmHg")


def test_unknown_preset_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'cbramod'; allowed: \['cbramod-eeg', 'ecg', "):
        get_preset("cbramod")
