"""Data correctness on real-world layouts: one row per record, no silently wrong rate or scale, no
ringing at the edges, reasons that name the cause (unit tests: readers, steps, listing and
`process_file` called directly, no Ray)."""
from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from physiofm.data import RecordingRejected, read_recording, read_trials, storage, synthetic
from physiofm.data.pipeline import InputFile, list_inputs, process_file
from physiofm.data.presets import get_preset
from physiofm.data.recording import REASON_CODES
from physiofm.data.steps import RepairNaN
from tests.conftest import REPO_ROOT, shared_path

# What a reason must never be: a Python exception raised inside a reader.
EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b|Traceback|object has no attribute")


def process(path, preset="ecg", fmt="auto", **options) -> tuple[list[dict], dict]:
    item = InputFile(str(path), fmt, Path(path).stat().st_size if Path(path).exists() else 0)
    return process_file(item, get_preset(preset, **options), storage.RetryPolicy(attempts=1), {})


def assert_named(row: dict, code: str, pattern: str) -> None:
    assert row["status"] == "rejected" and row["reason_code"] == code, row["reason"]
    assert re.search(pattern, row["reason"]), row["reason"]
    assert not EXCEPTION_NAME.search(row["reason"]), row["reason"]


# ---------------------------------------------------------------- WFDB trees written with wfdb

def ecg_leads(seconds: float, fs: float, n: int, seed: int) -> np.ndarray:
    return synthetic.ecg(np.random.default_rng(seed), n, seconds, fs).T  # (samples, leads) in mV


def write_record(folder: Path, name: str, signal: np.ndarray, fs: float, names: list[str], units=None) -> Path:
    wfdb.wrsamp(name, fs=fs, units=units or ["mV"] * len(names), sig_name=names, p_signal=signal,
                fmt=["16"] * len(names), adc_gain=[200.0] * len(names), baseline=[0] * len(names), write_dir=str(folder))
    return folder / f"{name}.hea"


def write_multi_file_record(folder: Path, name: str = "multi", frames: int = 1500, fs: float = 62.5) -> Path:
    """Signals in three files of other stems (`{name}_e/_p/_r.dat`), at 4, 2 and 1 samples per frame."""
    spf = [4, 4, 2, 1]
    rng = np.random.default_rng(3)
    signals = [synthetic.ecg(rng, 1, frames / fs, fs * spf[0])[0], synthetic.ecg(rng, 1, frames / fs, fs * spf[1])[0],
               100 + 10 * np.sin(np.arange(frames * 2) / 20), np.sin(np.arange(frames) / 15)]
    record = wfdb.Record(record_name=name, n_sig=4, fs=fs, sig_len=frames, samps_per_frame=spf, e_p_signal=signals,
                         file_name=[f"{name}_e.dat", f"{name}_e.dat", f"{name}_p.dat", f"{name}_r.dat"],
                         fmt=["16"] * 4, adc_gain=[200.0, 200.0, 100.0, 1000.0], baseline=[0] * 4,
                         units=["mV", "mV", "mmHg", "NU"], sig_name=["II", "V", "ABP", "Resp"])
    record.set_d_features(do_adc=True, expanded=True)
    record.set_defaults()
    record.wrsamp(expanded=True, write_dir=str(folder))
    return folder / f"{name}.hea"


def write_wfdb_tree(root: Path) -> dict[str, Path]:
    """A folder of WFDB records whose files do not group by stem: a multi-file record, a fixed-layout
    multi-segment record, a MIMIC-style variable-layout record (layout header, `~` gap, a second
    continuous run of two segments), a record named after another stem's signal file, and two
    headers sharing one signal file."""
    root.mkdir(parents=True, exist_ok=True)
    fs = 125.0
    records = {"multi": write_multi_file_record(root)}
    for index, name in enumerate(("041s01", "041s02")):
        write_record(root, name, ecg_leads(40.0, fs, 2, index), fs, ["II", "V"])
    (root / "041s.hea").write_text(f"041s/2 2 125 {2 * 5000} 8:26:04 26/10/1994\n041s01 5000\n041s02 5000\n")
    records["fixed"] = root / "041s.hea"
    (root / "3000003_layout.hea").write_text(
        "3000003_layout 3 125 0\n~ 0 200/mV 16 0 0 0 0 II\n~ 0 200/mV 16 0 0 0 0 V\n~ 0 200/NU 16 0 0 0 0 PLETH\n")
    write_record(root, "3000003_0001", ecg_leads(40.0, fs, 2, 5), fs, ["II", "V"])
    write_record(root, "3000003_0002", np.hstack([ecg_leads(40.0, fs, 1, 6), np.ones((5000, 1))]), fs,
                 ["II", "PLETH"], ["mV", "NU"])
    write_record(root, "3000003_0003", np.hstack([ecg_leads(30.0, fs, 1, 7), np.ones((3750, 1))]), fs,
                 ["II", "PLETH"], ["mV", "NU"])
    (root / "3000003.hea").write_text("3000003/5 3 125 16250\n3000003_layout 0\n3000003_0001 5000\n~ 2500\n"
                                      "3000003_0002 5000\n3000003_0003 3750\n")
    records["variable"] = root / "3000003.hea"
    write_record(root, "3975656n", ecg_leads(20.0, fs, 1, 8), fs, ["II"])
    numerics = (root / "3975656n.hea").read_text().replace("3975656n 1", "s00001-numerics 1", 1)
    (root / "s00001-numerics.hea").write_text(numerics)
    (root / "3975656n.hea").unlink()  # only a header of another stem names the signal file now
    records["other_stem"] = root / "s00001-numerics.hea"
    records["plain"] = write_record(root, "100", ecg_leads(30.0, 360.0, 2, 9), 360.0, ["MLII", "V5"])
    (root / "100.atr").write_bytes(b"\x00" * 16)
    skew = (root / "100.hea").read_text().replace("100 2", "100skew 2", 1)
    (root / "100skew.hea").write_text(skew)
    records["shared_file"] = root / "100skew.hea"
    (root / "RECORDS").write_text("\n".join(sorted(p.stem for p in records.values())) + "\n")
    return records


def wfdb_rate_and_duration(header: Path) -> tuple[float, float]:
    """What wfdb itself reads: the highest per-signal rate and the record's duration (gaps count)."""
    record = wfdb.rdrecord(str(header.with_suffix("")), smooth_frames=False)
    spf = record.samps_per_frame if isinstance(record.samps_per_frame, list) else [1]
    return float(record.fs * max(spf)), record.sig_len / record.fs


def test_one_row_per_wfdb_record_whatever_its_files_are_named(tmp_path):
    records = write_wfdb_tree(tmp_path / "tree")
    items, ignored = list_inputs([str(tmp_path / "tree")])
    assert sorted(i.path for i in items) == sorted(str(p) for p in records.values())
    assert [Path(p).name for p, _ in ignored] == ["RECORDS"]
    by_path = {i.path: i for i in items}
    multi = tmp_path / "tree" / "multi"
    assert by_path[str(records["multi"])].bytes == sum(
        (multi.parent / n).stat().st_size for n in ("multi.hea", "multi_e.dat", "multi_p.dat", "multi_r.dat"))
    variable = by_path[str(records["variable"])].bytes
    assert variable == sum(p.stat().st_size for p in (tmp_path / "tree").glob("3000003*"))
    for name, header in records.items():
        windows, row = process(header)
        assert row["status"] == "ok", (name, row["reason"])
        sfreq, duration = wfdb_rate_and_duration(header)
        assert (row["sfreq"], row["duration_s"]) == (pytest.approx(sfreq), pytest.approx(duration)), name


def test_segments_are_trials_of_their_master_and_gaps_are_absent(tmp_path):
    records = write_wfdb_tree(tmp_path / "tree")
    windows, row = process(records["variable"])
    assert row["subject"] == "3000003" and row["n_trials"] == 2  # [0001] [gap] [0002 0003]
    assert "1 layout header, 20.0 s of gaps; read as 2 continuous run(s)" in json.loads(row["notes"])[0]
    starts = np.concatenate([b["window_start_s"] for b in windows])
    assert starts.tolist() == [0.0, 10.0, 20.0, 30.0, 60.0, 70.0, 80.0, 90.0, 100.0, 110.0, 120.0]
    assert {s for b in windows for s in b["subject"]} == {"3000003"}
    assert [t for b in windows for t in sorted(set(b["trial"]))] == ["3000003_0001", "3000003_0002"]
    trials = read_trials(str(records["variable"]))
    own = wfdb.rdrecord(str(tmp_path / "tree" / "3000003_0002"))
    assert np.array_equal(trials[1].data[:, :5000], own.p_signal.T)  # the segment's own samples, as wfdb reads them
    fixed = read_trials(str(records["fixed"]))
    assert len(fixed) == 1 and fixed[0].n_samples == 10000 and fixed[0].subject == "041s"


def test_layout_header_orphan_signal_file_and_missing_segments_name_their_cause(tmp_path):
    records = write_wfdb_tree(tmp_path / "tree")
    (tmp_path / "tree" / "3000003.hea").unlink()  # the master is gone: its layout header stands alone
    _, row = process(tmp_path / "tree" / "3000003_layout.hea")
    assert_named(row, "layout_header", r"layout header of a multi-segment record \(3 signal names")
    items, _ = list_inputs([str(tmp_path / "tree")])
    orphan = tmp_path / "tree" / "orphan.dat"
    shutil.copy(tmp_path / "tree" / "100.dat", orphan)
    items = {Path(i.path).name: i for i in list_inputs([str(tmp_path / "tree")])[0]}
    assert "orphan.dat" in items and "3000003_0002.hea" in items  # without its master a segment is a record
    _, row = process_file(items["orphan.dat"], get_preset("ecg"), storage.RetryPolicy(), {})
    assert_named(row, "orphan_signal_file", r"WFDB signal file orphan\.dat is named by no header")
    (tmp_path / "tree" / "041s02.hea").unlink()
    _, row = process(records["fixed"])
    assert_named(row, "missing_file", r"multi-segment record 041s: 1 of 2 segment headers missing beside 041s\.hea "
                                      r"\(041s02\.hea\)")
    (tmp_path / "tree" / "multi_p.dat").unlink()
    _, row = process(records["multi"])
    assert_named(row, "missing_file", r"WFDB signal file multi_p\.dat \(named on line 4 of multi\.hea\) is missing")


def test_a_multi_segment_record_reads_the_same_from_s3(tmp_path, s3_bucket):
    records = write_wfdb_tree(tmp_path / "tree")
    for path in (tmp_path / "tree").iterdir():
        storage.write_bytes(storage.join(s3_bucket, "tree", path.name), path.read_bytes())
    items, _ = list_inputs([storage.join(s3_bucket, "tree")])
    assert sorted(Path(i.path).name for i in items) == sorted(p.name for p in records.values())
    remote = read_trials(storage.join(s3_bucket, "tree", "3000003.hea"))
    local = read_trials(str(records["variable"]))
    assert [t.trial for t in remote] == [t.trial for t in local]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(remote, local))


# ---------------------------------------------------------------- header fields, checked as written

def corrupted(tmp_path: Path, record: str, edit) -> Path:
    """A copy of a real record's folder whose header text went through `edit` (lines → lines)."""
    source = shared_path("data", "real", "wfdb", record)
    folder = tmp_path / record
    shutil.copytree(source, folder)
    header = next(folder.glob("*.hea"))
    lines = header.read_text().splitlines(keepends=True)
    header.write_text("".join(edit(lines)))
    return header


def on_record_line(old: str, new: str):
    return lambda lines: [lines[0].replace(old, new, 1), *lines[1:]]


def on_signal_line(index: int, old: str, new: str):
    return lambda lines: [line.replace(old, new, 1) if i == index + 1 else line for i, line in enumerate(lines)]


@pytest.mark.parametrize("text, problem", [
    ("abc", "'abc' is not a number"), ("-500", "'-500' is not a positive finite number"),
    ("nan", "'nan' is not a number"), ("inf", "'inf' is not a number"),
    ("2e9", r"'2e9' \(2e\+09 Hz\) is read by wfdb as 2 Hz"), ("2.5e2", r"'2.5e2' \(250 Hz\) is read by wfdb as 2.5 Hz"),
])
def test_a_sampling_frequency_that_is_not_read_as_written_is_rejected_naming_the_field(tmp_path, text, problem):
    header = corrupted(tmp_path, "ptbxl-HR06000", on_record_line(" 500 ", f" {text} "))
    _, row = process(header)
    assert_named(row, "header_field", r"WFDB header HR06000\.hea: line 1 \(record line\): sampling frequency " + problem)


def test_frequencies_written_otherwise_but_read_right_are_kept(tmp_path):
    for text in ("500.0", "500/1000"):
        _, row = process(corrupted(tmp_path / text.replace("/", "_"), "ptbxl-HR06000", on_record_line(" 500 ", f" {text} ")))
        assert (row["status"], row["sfreq"]) == ("ok", 500.0), row["reason"]
    absent = corrupted(tmp_path / "absent", "challenge2015-v102s", lambda lines: ["v102s 4\n", *lines[1:]])
    rec = read_recording(str(absent))
    assert rec.sfreq == 250.0 and "the specification's default 250 Hz assumed" in rec.meta["notes"][0]


def test_a_unit_wfdb_misreads_is_taken_as_written_and_noted(tmp_path):
    header = corrupted(tmp_path, "challenge2015-v102s", on_signal_line(2, "/NU", "/\u00b0"))  # wfdb: units \w only
    rec = read_recording(str(header))
    assert rec.units[2] == "\u00b0" and "line 4 (signal 2 'PLETH'): units '\u00b0' as written (wfdb reads 'mV')" in rec.meta["notes"]


@pytest.mark.parametrize("edit, problem", [
    (on_signal_line(1, "1000.0(0)/mv", "abc(0)/mv"), r"line 3 \(signal 1 'II'\): ADC gain 'abc' is not a number"),
    (on_signal_line(1, "(0)", "(x)"), r"line 3 \(signal 1 'II'\): baseline 'x' is not an integer"),
    (on_signal_line(1, "16x1+24", "16x1:x+24"), r"line 3 \(signal 1 'II'\): format field '16x1:x\+24'"),
    (on_signal_line(1, " 16 0 -20 ", " 16 q -20 "), r"line 3 \(signal 1 'II'\): ADC zero 'q' is not an integer"),
    (on_record_line(" 5000", " 5x00"), r"number of samples '5x00' is not a whole number"),
    (on_record_line(" 12 ", " 13 "), r"declares 13 signals; the header has 12 signal lines"),
])
def test_fields_shifted_by_garbage_are_named_not_reported_as_missing_channels(tmp_path, edit, problem):
    _, row = process(corrupted(tmp_path, "ptbxl-HR06000", edit))
    assert_named(row, "header_field", problem)


def test_uncalibrated_leads_are_left_out_and_a_record_of_them_rejected(tmp_path):
    one = corrupted(tmp_path / "one", "ptbxl-HR06000", on_signal_line(1, "1000.0(0)/mv", "0(0)/mv"))
    windows, row = process(one)
    assert row["status"] == "ok" and not windows[0]["channel_mask"][0][1]  # lead II is absent, not 5x too large
    assert any("II: uncalibrated: ADC gain 0 on line 3" in note for note in json.loads(row["notes"]))
    every = corrupted(tmp_path / "all", "mitdb-100", lambda lines: [re.sub(r" 200 11 ", " 0 11 ", line) for line in lines])
    _, row = process(every)
    assert_named(row, "unusable_channel", r"no usable ecg channel: II: uncalibrated: ADC gain 0 on line \d")


def test_the_ecg_preset_bounds_amplitude_in_millivolts(tmp_path):
    micro = corrupted(tmp_path / "uV", "ptbxl-HR06000", lambda lines: [line.replace("/mv", "/uV") for line in lines])
    _, row = process(micro)  # converted by the stated unit: 1000x smaller, implausible for an ECG
    assert_named(row, "amplitude", r"no window kept: 1 of 1 windows failed the checks \(1 with a peak < 0\.05 mV, "
                                   r"flat or mis-scaled")
    large = corrupted(tmp_path / "x200", "ptbxl-HR06000", lambda lines: [line.replace("1000.0(0)", "5(0)") for line in lines])
    _, row = process(large)
    assert_named(row, "amplitude", r"1 with a peak >= 10 mV \(largest 1\d\d\.?\d* mV\)")
    _, row = process(shared_path("data", "real", "wfdb", "ptbxl-HR06000", "HR06000.hea"))
    assert row["status"] == "ok" and row["n_windows"] == 1


def test_a_header_without_lead_names_is_rejected_for_that(tmp_path):
    def unnamed(lines):
        return [lines[0]] + [" ".join(line.split()[:8]) + "\n" if line.strip() and not line.startswith("#") else line
                             for line in lines[1:]]
    _, row = process(corrupted(tmp_path, "ptbxl-HR06000", unnamed))
    assert_named(row, "missing_channels", r"can be identified: the file names none of its 12 signals")


# ---------------------------------------------------------------- invalid samples at the native rate

def test_invalid_samples_are_repaired_at_their_own_rate_not_spread_by_resampling(tmp_path):
    """drivedb-drive17b: EMG at 15.5 Hz (1 sample per frame) among ECG at 496 Hz (32 per frame)."""
    folder = tmp_path / "drive"
    shutil.copytree(shared_path("data", "real", "wfdb", "drivedb-drive17b"), folder)
    frame = 32 + 1 + 2 + 2 + 1 + 1 + 2  # samples per frame, in signal order: ECG EMG footGSR handGSR HR marker RESP
    raw = np.fromfile(folder / "drive17b.dat", dtype="<i2")
    bad_frames = [5000, 5001, 9000, 12000]
    raw[np.array(bad_frames) * frame + 32] = -32768  # WFDB's invalid sample value, in EMG
    raw.tofile(folder / "drive17b.dat")
    rec = read_recording(str(folder / "drive17b.hea"))
    emg = rec.ch_names.index("EMG")
    assert rec.meta["nan_samples"] == 4 and rec.native_rates[emg] == 15.5
    invalid = np.flatnonzero(np.isnan(rec.data[emg]))
    assert invalid.tolist() == [f * 32 + k for f in bad_frames for k in range(32)]  # the 4 samples' time, no more
    assert np.isnan(rec.data).sum() == 4 * 32
    repaired = RepairNaN()(rec)
    assert repaired.meta["nan_interpolated"] == 4 and np.isfinite(repaired.data).all()
    with pytest.raises(RecordingRejected, match=r"NaN samples: 4 \(0\.0% of the signal; policy reject"):
        RepairNaN(policy="reject")(rec)


# ---------------------------------------------------------------- reasons and codes

def test_every_rejection_in_the_package_names_a_reason_code():
    """Each `RecordingRejected(...)` raised by physiofm passes one of REASON_CODES."""
    missing = []
    for path in sorted((REPO_ROOT / "physiofm").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RecordingRejected":
                codes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
                codes += [k.value.value for k in node.keywords if k.arg == "code" and isinstance(k.value, ast.Constant)]
                if not codes or codes[0] not in REASON_CODES or codes[0] == "unclassified":
                    missing.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert missing == []
    with pytest.raises(ValueError, match=r"reason code must be one of \['amplitude', "):
        RecordingRejected("x", "made_up")


# ---------------------------------------------------------------- EEG: filter the whole recording, then trim

def write_dc_edf(path: Path, seconds: float = 360.0, sfreq: float = 256.0, dc_v: float = 5e-3,
                 rhythm_v: float = 20e-6) -> Path:
    """19 CBraMod channels holding a DC offset plus a 10 Hz rhythm, written with MNE's EDF export."""
    import mne

    from physiofm.data.channels import CBRAMOD_19

    t = np.arange(int(seconds * sfreq)) / sfreq
    phases = np.linspace(0, np.pi, len(CBRAMOD_19))[:, None]
    data = dc_v + rhythm_v * np.sin(2 * np.pi * 10 * t + phases)
    raw = mne.io.RawArray(data, mne.create_info(list(CBRAMOD_19), sfreq, "eeg"), verbose="error")
    path.parent.mkdir(parents=True, exist_ok=True)
    mne.export.export_raw(path, raw, fmt="edf", overwrite=True, verbose="error")
    return path


def test_a_dc_offset_never_rings_into_kept_eeg_windows(tmp_path):
    (rec,) = read_trials(str(write_dc_edf(tmp_path / "dc.edf")))
    windows = get_preset("cbramod-eeg")(rec)  # 360 s, 60-s trims: 8 windows of 30 s
    peaks = np.abs(windows.tensors["x"]).max(axis=(1, 2, 3)) * 100  # µV
    assert len(windows) == 8 and windows.n_rejected == 0 and windows.index.tolist() == list(range(8))
    assert peaks.max() < 25.0 and peaks.min() > 15.0  # the 20 µV rhythm, no edge transient
    untrimmed = get_preset("cbramod-eeg", trim_s=0)(rec)  # even where the edges themselves are kept
    assert len(untrimmed) == 12 and np.abs(untrimmed.tensors["x"]).max() * 100 < 50.0


def test_a_real_bdf_with_millivolt_offsets_keeps_them_out_of_its_window():
    """mne-python's test.bdf: 7-17 mV electrode offsets; its one second is all edge."""
    rec = read_recording(str(shared_path("data", "real", "bdf", "mne-python", "test.bdf")))
    assert np.abs(np.median(rec.data[:19], axis=1)).max() > 7e-3
    windows = get_preset("cbramod-eeg", min_duration_s=0, trim_s=0, window_s=1, max_abs_uv=1e9)(rec)
    assert np.abs(windows.tensors["x"]).max() * 100 < 500.0  # its own drift (~0.4 mV), not 7.9 mV of ringing


def test_the_eeg_recipe_filters_before_it_trims():
    steps = [type(s).__name__ for s in get_preset("cbramod-eeg").steps]
    assert steps == ["SelectChannels", "RepairNaN", "Crop", "MNEResampleFilter", "Crop", "Scale"]
    assert get_preset("cbramod-eeg").steps[3].remove_dc_s == 0.1  # the DC first, in the filters' padding pass


# ---------------------------------------------------------------- EDF: what MNE warns about, and EDF+D

def patched_eegmat(tmp_path: Path, edits: dict[str, str], signal: int = 0) -> Path:
    """A copy of the real eegmat EDF with header fields rewritten (`duration`, `records`, or a signal
    field such as `physical maximum` of `signal`)."""
    source = shared_path("data", "real", "edf", "eegmat", "Subject00_2.edf")
    data = bytearray(source.read_bytes())
    ns = int(data[252:256])
    widths = {"label": 16, "transducer": 80, "physical dimension": 8, "physical minimum": 8, "physical maximum": 8,
              "digital minimum": 8, "digital maximum": 8, "prefiltering": 80, "samples per record": 8}
    for field, text in edits.items():
        if field in ("records", "duration"):
            start, width = {"records": (236, 8), "duration": (244, 8)}[field]
        else:
            start = 256 + sum(w * ns for f, w in widths.items() if list(widths).index(f) < list(widths).index(field))
            width = widths[field]
            start += signal * width
        data[start:start + width] = text.ljust(width).encode()
    path = tmp_path / "Subject00_2.edf"
    path.write_bytes(bytes(data))
    return path


EEG_SHORT = {"preset": "cbramod-eeg", "min_duration_s": 0, "trim_s": 0, "window_s": 10}


def test_an_edf_signal_without_a_physical_range_is_named_not_taken_as_flat(tmp_path):
    source = shared_path("data", "real", "edf", "eegmat", "Subject00_2.edf")
    _, good = process(source, **EEG_SHORT)
    assert good["status"] == "ok" and good["n_windows"] == 6
    path = patched_eegmat(tmp_path, {"physical maximum": "-93.352"})  # = its physical minimum
    _, row = process(path, **EEG_SHORT)
    assert_named(row, "unusable_channel", r"channels \['FP1'\] cannot be used: FP1: physical range undefined: "
                                          r"minimum = maximum = -93\.352 uV in the EDF header \(signal 1\)")
    assert any("MNE: Physical range is not defined in following channels: EEG Fp1" in n for n in json.loads(row["notes"]))


def test_an_edf_record_duration_of_zero_is_rejected_not_taken_as_one_second(tmp_path):
    _, row = process(patched_eegmat(tmp_path, {"duration": "0"}), **EEG_SHORT)
    assert_named(row, "header_field", r"EDF header field 'duration of a data record' \(bytes 244-251\) is 0 s for a "
                                      r"file of 21 signals")


def test_mne_warnings_reach_the_notes(tmp_path):
    _, row = process(patched_eegmat(tmp_path, {"records": "-1"}), **EEG_SHORT)
    notes = json.loads(row["notes"])
    assert row["status"] == "ok" and row["duration_s"] == 62.0
    assert "the header's number of data records is -1 (not stopped properly): 62 read from the file size" in notes
    assert any(n.startswith("MNE: Number of records from the header does not match the file size") for n in notes)


def write_edfio(path: Path, signals: list[tuple[str, np.ndarray, float]], discontinuous_after: int | None = None,
                gap_s: int = 0) -> Path:
    """An EDF+ written with edfio; with `discontinuous_after`, turned EDF+D by moving the onsets of
    the later 1-s data records `gap_s` on (their time-keeping annotations rewritten)."""
    import edfio

    edf = edfio.Edf([edfio.EdfSignal(x, fs, label=label, physical_dimension="uV") for label, x, fs in signals],
                    data_record_duration=1, annotations=[edfio.EdfAnnotation(0.5, None, "start")])
    edf.write(path)
    if discontinuous_after is None:
        return path
    data = bytearray(path.read_bytes())
    ns = int(data[252:256])
    samples = [int(data[256 + ns * 216 + 8 * i: 256 + ns * 216 + 8 * (i + 1)]) for i in range(ns)]
    header, record = 256 * (ns + 1), sum(samples) * 2
    data[192:197] = b"EDF+D"
    for i in range(discontinuous_after, int(data[236:244])):
        start = header + i * record + sum(samples[:-1]) * 2
        tal = f"+{i + gap_s}\x14\x14\x00".encode().ljust(samples[-1] * 2, b"\x00")
        data[start:start + len(tal)] = tal
    path.write_bytes(bytes(data))
    return path


def test_an_edf_with_uneven_rates_says_what_was_resampled(tmp_path):
    t = np.arange(60 * 256) / 256
    path = write_edfio(tmp_path / "uneven.edf", [("EEG Fp1", 20 * np.sin(2 * np.pi * 3 * t), 256.0),
                                                 ("EEG Fp2", 20 * np.sin(2 * np.pi * 3 * t[::2]), 128.0)])
    rec = read_recording(str(path))
    assert rec.sfreq == 256.0 and rec.meta["resampled"] == {"EEG Fp2": "128 Hz -> 256 Hz"}
    assert rec.native_rates == [256.0, 128.0]
    assert "uneven rates: 1 signal(s) resampled to 256 Hz by MNE at reading (EEG Fp2 128 Hz -> 256 Hz)" in rec.meta["notes"]


def test_an_edf_plus_d_file_is_read_per_continuous_part_at_its_onsets(tmp_path):
    t = np.arange(60 * 200) / 200
    path = write_edfio(tmp_path / "disc.edf", [("ECG II", 800 * np.sin(2 * np.pi * 1.1 * t) ** 21, 200.0)],
                       discontinuous_after=30, gap_s=45)
    parts = read_trials(str(path))
    assert [p.duration_s for p in parts] == [30.0, 30.0] and [p.meta["offset_s"] for p in parts] == [0.0, 75.0]
    assert [p.trial for p in parts] == ["part1", "part2"]
    assert "EDF+D (discontinuous): 2 continuous part(s), 45.0 s of gaps between them" in parts[0].meta["notes"][0]
    windows, row = process(path, preset="ecg")
    starts = np.concatenate([b["window_start_s"] for b in windows]).tolist()
    assert starts == [0.0, 10.0, 20.0, 75.0, 85.0, 95.0] and row["duration_s"] == 60.0


def test_a_multi_trial_file_is_rejected_under_the_code_of_its_trials(tmp_path):
    from physiofm.data import bad_files

    path = bad_files.nan_filled_deap(tmp_path / "s07.dat", n_trials=3)
    _, row = process(path, preset="physiosync")
    assert row["reason_code"] == "nan_samples"
    assert row["reason"].startswith("all 3 trials rejected (nan_samples x3); trial 03: NaN samples: ")


def test_rejections_are_grouped_by_code_and_the_corpus_report_says_what_the_corpus_became():
    from physiofm.data.corpus import corpus_report, rejected_reasons, report_lines

    def row(path, status, code="", reason="", duration=10.0, sfreq=500.0, channels=("I", "II"), used=(), windows=0):
        return {"path": path, "status": status, "reason": reason, "reason_code": code, "duration_s": duration,
                "sfreq": sfreq, "channels": json.dumps(list(channels)), "channels_used": json.dumps(list(used)),
                "n_windows": windows}
    rows = [row("a.hea", "ok", used=("I", "II"), windows=1), row("b.hea", "ok", used=("II",), windows=1, sfreq=360.0),
            *[row(f"n{i}.hea", "rejected", "nan_samples", f"NaN samples: {i}") for i in range(12)],
            row("c.hea", "rejected", "nan_samples", "NaN samples: 0"),
            row("d.edf", "rejected", "unreadable", "not a readable EDF file", duration=0.0, sfreq=None, channels=()),
            row("old.hea", "rejected", None, "from an older version")]
    groups = rejected_reasons(rows)
    assert list(groups) == ["nan_samples", "unclassified", "unreadable"]
    assert groups["nan_samples"]["files"] == 13 and len(groups["nan_samples"]["reasons"]) == 10
    assert groups["nan_samples"]["reasons"][0] == {"reason": "NaN samples: 0", "files": 2, "example": "n0.hea"}
    assert groups["nan_samples"]["other_reasons"] == 2 and groups["unreadable"]["meaning"] == REASON_CODES["unreadable"]
    report = corpus_report(rows, [("README.txt", "documentation")], window_s=10.0)
    assert report["files"] == {"listed": 17, "ok": 2, "rejected": 15, "ignored": 1, "read": 16}
    assert report["rejected_by_code"] == {"nan_samples": 13, "unclassified": 1, "unreadable": 1}
    assert report["hours"] == {"read": pytest.approx(160 / 3600, abs=1e-6), "in_ok_files": pytest.approx(20 / 3600, abs=1e-6),
                               "kept_in_windows": pytest.approx(20 / 3600, abs=1e-6)}
    assert report["channels"]["seen_files"] == {"I": 16, "II": 16} and report["channels"]["used_files"] == {"II": 2, "I": 1}
    assert report["rates_hz"] == {"500": 15, "360": 1}
    lines = report_lines(report)
    assert lines[0] == "files: 17 listed, 2 ok, 15 rejected (nan_samples 13, unclassified 1, unreadable 1), 1 other files ignored"
    assert lines[1] == "hours: 0.044 read, 0.006 in ok files, 0.006 kept in windows (13% of what was read)"


def test_commits_of_an_earlier_version_resume_with_codes_filled(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from physiofm.data.corpus import MANIFEST_SCHEMA, CorpusLayout

    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name not in ("reason_code", "channels_used")])
    base = {"status": "rejected", "reason": "NaN samples: 3", "n_windows": 0, "n_windows_rejected": 0, "format": "wfdb",
            "dataset": "", "subject": "", "n_trials": 0, "duration_s": 0.0, "sfreq": None, "channels": "[]",
            "shapes": "{}", "notes": "[]", "bytes": 1, "seconds": 0.0, "retryable": False, "commit": "c1"}
    layout = CorpusLayout(str(tmp_path / "out"))
    (tmp_path / "out" / "_progress").mkdir(parents=True)
    table = pa.Table.from_pylist([{**base, "path": "a"}, {**base, "path": "b", "status": "ok", "reason": ""}], schema=old_schema)
    pq.write_table(table, tmp_path / "out" / "_progress" / "c1.parquet")
    rows = layout.committed_rows()
    assert [(r["path"], r["reason_code"], r["channels_used"]) for r in rows] == [("a", "unclassified", "[]"), ("b", "", "[]")]
    layout.write_manifest(rows)
    assert pq.read_table(tmp_path / "out" / "manifest.parquet").column("reason_code").to_pylist() == ["unclassified", ""]


def test_readers_resample_without_spreading_invalid_samples(tmp_path):
    import scipy.io

    from physiofm.data.readers.resampling import resample_marking_invalid

    x = np.sin(np.arange(400) / 7.0)
    x[[50, 51, 300]] = np.nan
    up = resample_marking_invalid(x, 3, 2)  # an output sample is invalid where its time covers an invalid one
    assert np.flatnonzero(np.isnan(up)).tolist() == [75, 76, 77, 450, 451]
    down = resample_marking_invalid(x, 1, 2)
    assert np.flatnonzero(np.isnan(down)).tolist() == [25, 150]
    path = synthetic.write_dreamer(tmp_path, n_subjects=1, n_trials=1, stimulus_s=10.0)
    content = scipy.io.loadmat(path)
    ecg = content["DREAMER"][0, 0]["Data"][0, 0]["ECG"][0, 0]["stimuli"][0, 0][0, 0]
    ecg[[100, 101, 2000], 1] = np.nan  # 256 Hz, resampled to the EEG's 128 Hz in the reader
    scipy.io.savemat(path, {"DREAMER": content["DREAMER"]})
    (rec,) = read_trials(str(path))
    assert rec.meta["nan_samples"] == 3 and np.isnan(rec.data[-1]).sum() == 2  # samples 50 and 1000 at 128 Hz
    assert RepairNaN()(rec).meta["nan_interpolated"] == 4  # 2 at 128 Hz cover 4 recorded at 256 Hz


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_a_prepared_wfdb_tree_has_one_manifest_row_per_record_and_a_report(tmp_path, ray_local):
    from physiofm.data import prepare_corpus, read_manifest

    records = write_wfdb_tree(tmp_path / "tree")
    (tmp_path / "tree" / "041s02.hea").unlink()  # a master whose segment header is missing, its .dat left alone
    lines: list[str] = []
    summary = prepare_corpus([str(tmp_path / "tree")], str(tmp_path / "out"), preset="ecg", progress=lines.append)
    manifest = read_manifest(str(tmp_path / "out")).set_index("path")
    orphan = str(tmp_path / "tree" / "041s02.dat")
    assert sorted(manifest.index) == sorted([*(str(p) for p in records.values()), orphan])
    assert manifest.loc[str(records["fixed"]), "reason_code"] == "missing_file"
    assert manifest.loc[orphan, "reason_code"] == "orphan_signal_file"
    for path, row in manifest[manifest.status == "ok"].iterrows():
        assert (row.sfreq, row.duration_s) == tuple(pytest.approx(v) for v in wfdb_rate_and_duration(Path(path)))
    assert summary["report"]["rejected_by_code"] == {"missing_file": 1, "orphan_signal_file": 1}
    assert ("[prepare] files: 7 listed, 5 ok, 2 rejected (missing_file 1, orphan_signal_file 1), 1 other files "
            "ignored") in lines
    assert "[prepare] rates seen (files): 125 Hz (2), 360 Hz (2), 250 Hz (1)" in lines, lines


GARBLES = ("x", "-1", "0", "9999999999")


def test_no_garbled_header_field_ends_as_a_python_exception_in_a_reason(tmp_path):
    """Every token of a real WFDB header's first lines, and every field of a real EDF header's fixed
    part and first signal, replaced by garbage: each file ends ok or with a reason that names it."""
    source = shared_path("data", "real", "wfdb", "challenge2015-v102s")
    lines = (source / "v102s.hea").read_text().splitlines(keepends=True)
    folder = tmp_path / "v102s"
    shutil.copytree(source, folder)
    outcomes = []
    for number, line in enumerate(lines[:3]):
        tokens = line.split()
        for position in range(len(tokens)):
            for garble in GARBLES:
                edited = " ".join(tokens[:position] + [garble] + tokens[position + 1:]) + "\n"
                (folder / "v102s.hea").write_text("".join(lines[:number] + [edited] + lines[number + 1:]))
                outcomes.append(process(folder / "v102s.hea")[1])
    edf = shared_path("data", "real", "edf", "eegmat", "Subject00_2.edf").read_bytes()
    ns = int(edf[252:256])
    fields = [(0, 8), (184, 8), (236, 8), (244, 8), (252, 4)]
    fields += [(256 + ns * offset, width) for offset, width in ((0, 16), (96, 8), (104, 8), (112, 8), (120, 8),
                                                                (128, 8), (216, 8))]
    for start, width in fields:
        for garble in GARBLES:  # "9999999999" s records: a 2.6e-6 Hz rate, rejected by the budget before decoding
            data = bytearray(edf)
            data[start:start + width] = garble.encode().ljust(width)[:width]
            (tmp_path / "garbled.edf").write_bytes(bytes(data))
            outcomes.append(process(tmp_path / "garbled.edf", **EEG_SHORT)[1])
    for row in outcomes:
        assert row["reason_code"] not in ("internal_error", "unclassified"), row["reason"]
        assert not EXCEPTION_NAME.search(row["reason"]), row["reason"]
    codes = {row["reason_code"] for row in outcomes}
    assert {"", "header_field", "missing_file", "unreadable", "truncated", "sampling_rate"} <= codes


def test_a_file_that_exhausts_memory_or_hits_a_bug_says_so_without_blaming_its_format(tmp_path):
    from physiofm.data.presets import Preset

    def exhausts(rec):
        raise MemoryError("Unable to allocate 29.8 GiB for an array with shape (3999999961,)")

    def buggy(rec):
        return rec.ch_names[99]

    path = shared_path("data", "real", "wfdb", "ptbxl-HR06000", "HR06000.hea")
    recipe = get_preset("ecg")
    for step, code, text in ((exhausts, "too_large", "the file needs more memory than is available: Unable to "),
                             (buggy, "internal_error", "unexpected error while processing this file (a bug in physiofm")):
        _, row = process_file(InputFile(str(path), "auto", 1), Preset("t", (step, *recipe.steps), recipe.windows),
                              storage.RetryPolicy(), {})
        assert row["reason_code"] == code and row["reason"].startswith(text) and not EXCEPTION_NAME.search(row["reason"])
    assert json.loads(row["notes"])[-1].startswith("IndexError at test_data_correctness.py:")
