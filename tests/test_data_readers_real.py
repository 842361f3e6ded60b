"""Every real recording in ../shared/data/real reads as its PROVENANCE.md states."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import shared_path
from physiofm.data import RecordingRejected, read_recording, read_trials, storage
from physiofm.data.presets import get_preset
from physiofm.data.steps import RepairNaN, SelectChannels

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
# file → (channel count, first names, last names, Hz, seconds)
REAL = {
    "wfdb/mitdb-100/100.hea": (2, ["MLII", "V5"], ["V5"], 360.0, 1805.556),
    "wfdb/ptbxl-HR06000/HR06000.hea": (12, LEADS, ["V6"], 500.0, 10.0),
    "wfdb/ptbdb-s0010_re/s0010_re.hea": (15, [n.lower() for n in LEADS], ["vx", "vy", "vz"], 1000.0, 38.4),
    "wfdb/drivedb-drive17b/drive17b.hea": (7, ["ECG", "EMG", "foot GSR", "hand GSR", "HR", "marker", "RESP"], ["RESP"],
                                           496.0, 1526.129),
    "wfdb/challenge2015-v102s/v102s.hea": (4, ["II", "V", "PLETH", "RESP"], ["RESP"], 250.0, 300.0),
    "edf/eegmat/Subject00_2.edf": (21, ["EEG Fp1", "EEG Fp2"], ["EEG Pz", "EEG A2-A1", "ECG ECG"], 500.0, 62.0),
    "edf/mne-python/test.edf": (139, ["A1", "A2"], ["I8", "Ergo-Left", "Ergo-Right", "Status"], 512.0, 6.0),
    "bdf/mne-python/test.bdf": (73, ["Fp1", "AF7"], ["M1", "EXG8", "Status"], 2048.0, 1.0),
    "bdf/biosemi-newtest/Newtest17-256.bdf": (17, ["A1", "A2"], ["A16", "Status"], 256.0, 60.0),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_file_reads_as_documented(name):
    n_channels, first, last, sfreq, seconds = REAL[name]
    rec = read_recording(str(shared_path("data", "real", name)))
    assert rec.data.shape[0] == len(rec.ch_names) == n_channels
    assert rec.ch_names[: len(first)] == first and rec.ch_names[-len(last):] == last
    assert rec.sfreq == sfreq
    assert rec.duration_s == pytest.approx(seconds, abs=1e-3)
    assert rec.data.dtype == np.float64


def test_annotation_only_edf_is_rejected_as_no_signal():
    with pytest.raises(RecordingRejected, match=r"no signal: EDF\+ with annotations only \(154 annotations"):
        read_recording(str(shared_path("data", "real", "edf/sleep-edfx/SC4001EC-Hypnogram.edf")))


def test_physical_units_and_types_come_from_the_files():
    eegmat = read_recording(str(shared_path("data", "real", "edf/eegmat/Subject00_2.edf")))
    assert eegmat.units[0] == "V" and 1e-6 < np.abs(eegmat.data[0]).max() < 1e-3  # tens of µV, in volts
    assert eegmat.ch_types[-1] == "ecg" and eegmat.ch_types[0] == "eeg"
    ptbxl = read_recording(str(shared_path("data", "real", "wfdb/ptbxl-HR06000/HR06000.hea")))
    assert ptbxl.units[0] == "mv" and 0.1 < np.abs(ptbxl.data).max() < 5  # lower-case mV in the header
    drive = read_recording(str(shared_path("data", "real", "wfdb/drivedb-drive17b/drive17b.hea")))
    assert drive.meta["resampled"]["EMG"] == "15.5 Hz -> 496 Hz"
    assert drive.meta["resampled"]["foot GSR"] == "31 Hz -> 496 Hz" and "ECG" not in drive.meta["resampled"]
    assert drive.n_samples == 23655 * 32
    bdf = read_recording(str(shared_path("data", "real", "bdf/biosemi-newtest/Newtest17-256.bdf")))
    assert bdf.ch_types[-1] == "stim" and bdf.data[-1].max() == 65791  # Status keeps its raw codes


def test_nan_samples_are_reported_then_handled_by_an_explicit_policy():
    rec = read_recording(str(shared_path("data", "real", "wfdb/challenge2015-v102s/v102s.hea")))
    assert rec.meta["nan_samples"] == 23
    assert np.isnan(rec.data).sum(axis=1).tolist() == [3, 2, 17, 1]
    lead_ii = SelectChannels(("II",), kind="ecg")(rec)
    repaired = RepairNaN()(lead_ii)
    assert repaired.meta["nan_interpolated"] == 3 and np.isfinite(repaired.data).all()
    with pytest.raises(RecordingRejected, match=r"NaN samples: 3 .*policy reject"):
        RepairNaN(policy="reject")(lead_ii)
    windows = get_preset("ecg")(rec)
    assert len(windows) == 30 and np.isfinite(windows.tensors["x"]).all()


def test_holter_record_keeps_its_two_leads_and_masks_the_rest():
    rec = read_recording(str(shared_path("data", "real", "wfdb/mitdb-100/100.hea")))
    windows = get_preset("ecg")(rec)
    mask = windows.masks["channel_mask"]
    assert [lead for lead, present in zip(LEADS, mask) if present] == ["II", "V5"]  # MLII read as lead II
    x = windows.tensors["x"]
    assert x.shape == (180, 12, 10, 200)
    assert not x[:, ~mask].any() and np.abs(x[:, mask]).max() > 0.5


def test_second_signal_file_and_twelve_leads_in_canonical_order():
    rec = read_recording(str(shared_path("data", "real", "wfdb/ptbdb-s0010_re/s0010_re.hea")))
    assert rec.ch_types[-3:] == ["ecg"] * 3 and np.abs(rec.data[-3:]).max() > 0  # vx vy vz from the .xyz
    windows = get_preset("ecg")(rec)
    assert windows.tensors["x"].shape == (3, 12, 10, 200) and windows.masks["channel_mask"].all()


def test_eegmat_labels_canonicalise_to_the_cbramod_montage():
    rec = read_recording(str(shared_path("data", "real", "edf/eegmat/Subject00_2.edf")))
    windows = get_preset("cbramod-eeg", min_duration_s=0, trim_s=0, window_s=10)(rec)
    assert windows.tensors["x"].shape == (6, 19, 10, 200)
    with pytest.raises(RecordingRejected, match=r"too short: 62.0 s < minimum 300 s"):
        get_preset("cbramod-eeg")(rec)


def test_multi_file_wfdb_record_reads_the_same_from_s3(s3_bucket):
    folder = shared_path("data", "real", "wfdb/ptbdb-s0010_re")
    for path in folder.iterdir():
        storage.write_bytes(storage.join(s3_bucket, "ptbdb", path.name), path.read_bytes())
    local = read_recording(str(folder / "s0010_re.hea"))
    (remote,) = read_trials(storage.join(s3_bucket, "ptbdb", "s0010_re.hea"))
    assert remote.source == f"{s3_bucket}/ptbdb/s0010_re.hea"
    assert remote.ch_names == local.ch_names and np.array_equal(remote.data, local.data)
