"""`cbramod-eeg` equals the official CBraMod preprocessing (MNE's resampling and FIR filters on the
whole recording, then trims), window for window."""
from __future__ import annotations

import mne
import numpy as np
import pytest

from benchmarks.reference_loops import cbramod_loop_file, tueg_labels
from physiofm.data import get_preset, read_trials, synthetic
from physiofm.data.mne_filters import MNEResampleFilter
from physiofm.data.recording import Recording


def relative_rms(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((ours - reference) ** 2) / np.mean(reference ** 2)))


def recording(data: np.ndarray, sfreq: float) -> Recording:
    n = data.shape[0]
    return Recording(data=data, ch_names=[f"C{i}" for i in range(n)], ch_types=["eeg"] * n, units=["V"] * n,
                     sfreq=sfreq, source="mem", dataset="test")


@pytest.mark.parametrize("sfreq, seconds", [(256.0, 70.0), (250.0, 61.3), (500.0, 45.5), (200.0, 50.0),
                                            (128.0, 48.7)])
def test_fused_step_equals_mne_resample_filter_notch_away_from_the_edges(sfreq, seconds):
    rng = np.random.default_rng(int(sfreq))
    n = int(sfreq * seconds)
    # a random walk with DC offsets of several mV: the hardest case for a high-pass
    data = np.cumsum(rng.standard_normal((3, n)), axis=1) * 2e-6 + np.array([[5e-3], [0.0], [-2e-3]])
    raw = mne.io.RawArray(data.copy(), mne.create_info(3, sfreq, "eeg"), verbose="error")  # MNE filters in place
    expected = raw.resample(200, verbose="error").filter(0.3, 75, verbose="error").notch_filter(
        60, verbose="error").get_data()
    interior = slice(10 * 200, -10 * 200)  # beyond the filters' 8.8-s half span
    for fft in ("torch", "scipy"):
        for precision, tolerance in (("float64", 1e-5), ("float32", 1e-3)):  # measured: 1e-6 (200 Hz) .. 1e-13; 1e-4
            out = MNEResampleFilter(precision=precision, fft=fft)(recording(data.copy(), sfreq))
            assert out.sfreq == 200.0 and out.data.shape == expected.shape and out.data.dtype == precision
            assert relative_rms(out.data[:, interior], expected[:, interior]) < tolerance, (fft, precision)


def test_cbramod_preset_gives_the_official_windows(tmp_path):
    """Same windows (same indices) as the official loop within 2 % RMS, also with a 5 mV DC offset
    (filtered on the whole recording, then trimmed: no edge transient in a kept window)."""
    (path,) = synthetic.write_tueg(tmp_path, n_subjects=1, duration_s=400.0, sfreq=256.0, seed=3)
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error")
    offset = tmp_path / "offset" / path.name
    offset.parent.mkdir()
    raw._data[:19] += 5e-3  # 5 mV DC on every EEG channel
    mne.export.export_raw(offset, raw, fmt="edf", overwrite=True, verbose="error")
    for edf in (path, offset):
        expected, kept = cbramod_loop_file(str(edf))
        windows = get_preset("cbramod-eeg")(read_trials(str(edf))[0])
        assert windows.index.tolist() == kept.tolist() and len(kept) == 9  # (400 - 120) // 30 windows, all kept
        assert windows.start_s.tolist() == [60.0 + 30 * i for i in range(9)]
        ours = windows.tensors["x"] * 100  # µV/100 → µV
        assert relative_rms(ours, expected) < 0.02
        for window, reference in zip(ours, expected):  # each window, the first and last included
            assert relative_rms(window, reference) < 0.02


def test_only_the_used_channels_are_decoded_and_the_file_channels_recorded(tmp_path):
    (path,) = synthetic.write_tueg(tmp_path, n_subjects=1, duration_s=20.0)
    preset = get_preset("cbramod-eeg")
    (rec,) = read_trials(str(path), decode_only=preset.decode_only)
    assert rec.ch_names == tueg_labels(str(path)) and rec.data.shape[0] == 19
    assert len(rec.meta["file_channels"]) == 22  # 19 + A1, A2 + EKG
    (full,) = read_trials(str(path))
    assert np.array_equal(full.data[:19], rec.data)
    dropped = synthetic.write_tueg(tmp_path / "o", n_subjects=1, duration_s=20.0, drop=("O1",))[0]
    (all_read,) = read_trials(str(dropped), decode_only=preset.decode_only)  # missing one: all decoded,
    assert all_read.data.shape[0] == 21  # so that the rejection can name the file's channels


def test_fused_step_options_are_checked_and_short_signals_filtered():
    with pytest.raises(ValueError, match=r"precision must be one of \('float32', 'float64'\)"):
        MNEResampleFilter(precision="float16")
    with pytest.raises(ValueError, match=r"fft must be one of \('torch', 'scipy'\)"):
        MNEResampleFilter(fft="numpy")
    with pytest.raises(ValueError, match=r"notch frequencies must be below the Nyquist"):
        MNEResampleFilter(sfreq=100.0, high=None, notch=(60.0,))
    short = MNEResampleFilter()(recording(np.full((2, 2560), 1e-5), 256.0))  # 10 s, shorter than the filters
    assert short.data.shape == (2, 2000) and np.isfinite(short.data).all()


def test_dc_removal_fused_into_the_padding_equals_the_remove_dc_step():
    from physiofm.data.steps import RemoveDC

    rng = np.random.default_rng(5)
    rec = recording(np.cumsum(rng.standard_normal((4, 256 * 60)), axis=1) * 1e-6 + 3e-3, 256.0)
    fused = MNEResampleFilter(remove_dc_s=0.1)(rec)
    apart = MNEResampleFilter()(RemoveDC(0.1)(rec))
    assert np.array_equal(fused.data, apart.data)
