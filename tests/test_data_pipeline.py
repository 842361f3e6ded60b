"""The Ray Data pipeline end to end on a real local Ray: accounting, determinism, resume, S3."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray

from physiofm.data import bad_files, storage, synthetic
from physiofm.data.corpus import CorpusLayout, read_manifest
from physiofm.data.loader import corpus_info, read_windows, training_dataset
from physiofm.data.pipeline import INPUT_MIB_PER_WORKER, InputFile, list_inputs, prepare_corpus, process_file
from physiofm.data.presets import Preset, get_preset

EEG_OPTIONS = {"min_duration_s": 0, "trim_s": 0}  # short synthetic recordings, same recipe otherwise
# file (relative to the corpus) → expected windows, or the regex its rejection reason must match
EXPECTED = {
    "tueg/edf/000/aaaaaaaa/s001_2015/01_tcp_ar/aaaaaaaa_s001_t000.edf": 2,
    "tueg/edf/000/aaaaaaab/s001_2015/01_tcp_ar/aaaaaaab_s001_t000.edf": 2,
    "deap/data_preprocessed_python/s01.dat": 4,
    "bad/truncated.edf": r"^truncated EDF file: its header declares 60 data records of \d+ bytes, the file holds 3\d\.\d",
    "bad/flipped.edf": r"^EDF header field 'number of data records' \(bytes 236-243\) is not ASCII text",
    "bad/empty.edf": r"^empty file \(0 bytes\): empty\.edf$",
    "bad/pickle_named.edf": r"^not a readable EDF file",
    "bad/s90.dat": r"^NaN samples: 145920 \(100\.0% of the signal",  # 19 selected channels × 60 s × 128 Hz
    "bad/missing/edf/000/aaaaaaaa/s001_2015/01_tcp_ar/aaaaaaaa_s001_t000.edf": r"^missing channels \['O1', 'O2'\]",
    "bad/s66.dat": r"^hostile or foreign pickle rejected unexecuted: forbidden global io\.open",
}


CODES = {"bad/truncated.edf": "truncated", "bad/flipped.edf": "header_field", "bad/empty.edf": "empty_file",
         "bad/pickle_named.edf": "unreadable", "bad/s90.dat": "nan_samples",
         "bad/missing/edf/000/aaaaaaaa/s001_2015/01_tcp_ar/aaaaaaaa_s001_t000.edf": "missing_channels",
         "bad/s66.dat": "hostile_pickle"}


def write_robust_corpus(root: Path) -> Path:
    good = synthetic.write_tueg(root / "tueg", n_subjects=2, duration_s=60.0)
    deap = synthetic.write_deap(root / "deap", n_trials=2)[0]
    bad = root / "bad"
    bad.mkdir()
    bad_files.truncated(good[0], bad / "truncated.edf", keep=0.6)
    bad_files.bit_flipped(good[0], bad / "flipped.edf")
    bad_files.empty(bad / "empty.edf")
    bad_files.wrong_extension(deap, bad / "pickle_named.edf")
    bad_files.nan_filled_deap(bad / "s90.dat")
    synthetic.write_tueg(bad / "missing", n_subjects=1, duration_s=60.0, drop=("O1", "O2"))
    bad_files.hostile_pickle(bad / "s66.dat", root / "payload-ran")
    (root / "README.txt").write_text("a corpus for tests\n")
    return root


def rows_by_key(windows: dict[str, np.ndarray], root: str) -> dict[tuple, dict]:
    """Window rows keyed by (recording relative to `root`, trial, window_index)."""
    out = {}
    for i in range(len(windows["window_index"])):
        key = (windows["recording"][i].removeprefix(root), windows["trial"][i], int(windows["window_index"][i]))
        out[key] = {name: column[i] for name, column in windows.items() if name != "recording"}
    return out


def assert_same_windows(a: dict[tuple, dict], b: dict[tuple, dict]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        for name, value in a[key].items():
            assert np.array_equal(value, b[key][name]), (key, name)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_robust_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory, ray_local):
    output = tmp_path_factory.mktemp("prepared") / "out"
    summary = prepare_corpus([str(corpus)], str(output), preset="cbramod-eeg", preset_options=EEG_OPTIONS)
    return output, summary


def test_every_file_is_accounted_for_and_bad_ones_rejected_with_reasons(corpus, prepared):
    output, summary = prepared
    manifest = read_manifest(str(output)).set_index("path")
    assert sorted(manifest.index) == sorted(str(corpus / name) for name in EXPECTED)
    for name, expected in EXPECTED.items():
        row = manifest.loc[str(corpus / name)]
        if isinstance(expected, int):
            assert (row.status, row.n_windows, row.reason) == ("ok", expected, ""), name
        else:
            assert row.status == "rejected" and row.n_windows == 0, name
            assert re.search(expected, row.reason), (name, row.reason)
            assert row.reason_code == CODES[name], (name, row.reason_code)
    assert (manifest.reason_code[manifest.status == "ok"] == "").all()
    assert not (corpus / "payload-ran").exists()
    files = sorted((output / "windows").glob("*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == manifest.n_windows.sum() == 8
    assert summary["ok"] == 3 and summary["rejected"] == 7 and summary["windows"] == 8
    assert summary["ignored"] == 1 and summary["hours"] == pytest.approx((60 + 60 + 120) / 3600, abs=1e-6)
    assert summary["files_per_s"] > 0 and summary["windows_per_s"] > 0


def test_window_schema_and_corpus_json(prepared):
    output, _ = prepared
    files = sorted((output / "windows").glob("*.parquet"))
    schemas = {str(pq.read_schema(f)) for f in files}
    assert len(schemas) == 1  # identical across shards
    schema = pq.read_schema(files[0])
    assert "ArrowTensorType" in str(schema.field("x").type) and "(19, 30, 200)" in str(schema.field("x").type)
    for name, kind in (("recording", "string"), ("dataset", "string"), ("subject", "string"), ("session", "string"),
                       ("trial", "string"), ("labels", "string"), ("window_index", "int64"),
                       ("window_start_s", "double"), ("label", "int64")):
        assert str(schema.field(name).type) == kind, name
    info = corpus_info(str(output))
    assert info["columns"] == {"x": {"shape": [19, 30, 200], "dtype": "float32"}}
    hours = pytest.approx(240 / 3600, abs=1e-6)  # 2 × 60 s TUEG + 2 × 60 s DEAP trials, all in windows
    assert info["counts"] == {"files": 10, "ok": 3, "rejected": 7, "windows": 8, "ignored": 1,
                              "hours": hours, "window_hours": hours}
    assert info["preset"]["name"] == "cbramod-eeg" and info["preset"]["steps"][2] == {
        "step": "Crop", "min_duration_s": 0, "trim_s": 0.0}
    reasons = info["rejected_reasons"]  # grouped by code, each reason kept with a file that shows it
    assert sum(group["files"] for group in reasons.values()) == 7 and set(reasons) == set(CODES.values())
    assert reasons["hostile_pickle"]["reasons"][0]["example"].endswith("bad/s66.dat")
    assert reasons["nan_samples"]["reasons"][0]["reason"].startswith("NaN samples: 145920")
    report = info["report"]
    assert report["files"] == {"listed": 10, "ok": 3, "rejected": 7, "ignored": 1, "read": 5}
    assert report["hours"]["kept_in_windows"] == pytest.approx(240 / 3600, abs=1e-6)
    assert report["channels"]["used"] == 19 and report["channels"]["used_files"]["FP1"] == 3
    assert report["channels"]["seen_files"]["EEG FP1-REF"] == 3 and report["rates_hz"] == {"250": 3, "128": 2}
    assert info["ignored"] == [{"path": str(Path(info["inputs"][0]) / "README.txt"),
                                "why": "documentation or metadata, not a recording"}]
    windows = read_windows(str(output))
    assert windows["x"].shape == (8, 19, 30, 200) and windows["x"].dtype == np.float32
    deap = windows["dataset"] == "deap"
    assert sorted(windows["trial"][deap]) == ["01", "01", "02", "02"]
    assert set(json.loads(windows["labels"][deap][0])) == {"valence", "arousal", "dominance", "liking"}
    assert (windows["label"] == -1).all() and set(windows["window_start_s"]) == {0.0, 30.0}


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_two_runs_give_bit_identical_windows(corpus, prepared, tmp_path, ray_local):
    output, _ = prepared
    again = tmp_path / "again"
    free = ray_local.available_resources().get("CPU", 0.0)
    workers_before = file_workers_started()
    prepare_corpus([str(corpus)], str(again), preset="cbramod-eeg", preset_options=EEG_OPTIONS, files_per_commit=4)
    # its workers' CPUs are free again when it returns: a training run's corpus read follows at once
    assert ray_local.available_resources().get("CPU", 0.0) >= free, (ray_local.available_resources(), free)
    # a few MiB of input: one worker, not one per CPU (a worker's start costs more than these files)
    input_bytes = sum(f.stat().st_size for f in Path(corpus).rglob("*") if f.is_file())
    assert input_bytes < INPUT_MIB_PER_WORKER * 2**20 and free == 2.0
    assert file_workers_started() - workers_before == 1
    assert_same_windows(rows_by_key(read_windows(str(output)), ""), rows_by_key(read_windows(str(again)), ""))


def file_workers_started() -> int:
    """Pipeline workers (Ray Data actors) this cluster has started, live or dead."""
    from ray.util.state import list_actors

    return sum(a.class_name == "MapWorker(MapBatches(_FileWorker))" for a in list_actors(limit=10_000))


class Interrupted(Exception):
    pass


@pytest.mark.slow  # end to end: several runs of the pipeline, killed or failing on purpose
def test_interrupted_run_resumes_without_redoing_finished_recordings(corpus, prepared, tmp_path):
    output = tmp_path / "resumed"
    commits = []

    def stop_after_two(info):  # the driver dies right after its second commit
        commits.append(info)
        if len(commits) == 2:
            raise Interrupted

    with pytest.raises(Interrupted):  # one worker (2 CPUs each), one file per task: results in path order
        prepare_corpus([str(corpus)], str(output), preset="cbramod-eeg", preset_options=EEG_OPTIONS,
                       files_per_commit=4, files_per_task=1, num_cpus=2, on_commit=stop_after_two)
    assert [len(c["paths"]) for c in commits] == [4, 4]  # the 7 bad files sort first, then DEAP
    first = {f.name: f.stat().st_mtime_ns for f in (output / "windows").glob("*.parquet")}
    kept = {name: mtime for name, mtime in first.items() if name.split("_")[0] in commits[1]["prefixes"]}
    assert kept  # DEAP's windows; the files of tasks that finished after the last commit are not committed
    # A shard a crash left half-written, named as the pipeline's by an execution it recorded: it must go.
    execution = sorted((output / "_progress" / "attempts").glob("*.json"))[0].stem
    leftover = output / "windows" / f"{execution}-deadbeef_00000.parquet"
    leftover.write_bytes(next((output / "windows").glob("*.parquet")).read_bytes()[:1000])
    # A file the pipeline has no record of writing: never removed, never read (its windows would repeat).
    foreign = output / "windows" / "99999999T000000-00001-dead_x.parquet"
    shutil.copy(next((output / "windows").glob("*.parquet")), foreign)

    summary = prepare_corpus([str(corpus)], str(output), preset="cbramod-eeg", preset_options=EEG_OPTIONS,
                             files_per_commit=4)
    assert summary["skipped"] == 8 and summary["processed_now"] == 2
    after = {f.name: f.stat().st_mtime_ns for f in (output / "windows").glob("*.parquet")}
    assert {name: after[name] for name in kept} == kept  # committed shards untouched
    assert leftover.name not in after and not (set(first) - set(kept)) & set(after)
    assert after[foreign.name] == foreign.stat().st_mtime_ns
    manifest = read_manifest(str(output)).set_index("path")
    for commit in commits:
        assert manifest.loc[commit["paths"], "commit"].isin(commit["prefixes"]).all()
    assert_same_windows(rows_by_key(read_windows(str(output)), ""), rows_by_key(read_windows(str(prepared[0])), ""))

    rerun = prepare_corpus([str(corpus)], str(output), preset="cbramod-eeg", preset_options=EEG_OPTIONS)
    assert rerun["processed_now"] == 0 and rerun["windows"] == 8
    with pytest.raises(ValueError, match=r"prepared with another preset or format \(cbramod-eeg, auto\)"):
        prepare_corpus([str(corpus)], str(output), preset="ecg")
    fresh = prepare_corpus([str(corpus / "tueg")], str(output), preset="ecg", overwrite=True)
    assert fresh["files"] == 2 and fresh["processed_now"] == 2 and fresh["rejected"] == 2


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_s3_run_gives_the_same_windows_as_the_local_run(corpus, prepared, s3_bucket):
    fs, bucket = storage.fsspec_filesystem(s3_bucket)
    fs.put(str(corpus), f"{bucket}/raw", recursive=True)
    output = storage.join(s3_bucket, "prepared")
    summary = prepare_corpus([storage.join(s3_bucket, "raw")], output, preset="cbramod-eeg",
                             preset_options=EEG_OPTIONS)
    assert (summary["ok"], summary["rejected"], summary["windows"]) == (3, 7, 8)
    remote = rows_by_key(read_windows(output), storage.join(s3_bucket, "raw") + "/")
    local = rows_by_key(read_windows(str(prepared[0])), str(corpus) + "/")
    assert_same_windows(remote, local)
    reasons = read_manifest(output).set_index("path").reason
    assert re.search(EXPECTED["bad/s66.dat"], reasons[storage.join(s3_bucket, "raw", "bad", "s66.dat")])
    dataset = training_dataset(output, columns=["x", "window_index"])
    batch = next(iter(dataset.iter_torch_batches(batch_size=4)))
    assert tuple(batch["x"].shape) == (4, 19, 30, 200) and str(batch["x"].dtype) == "torch.float32"
    assert dataset.count() == 8


def test_training_dataset_streams_the_shards(prepared):
    output, _ = prepared
    dataset = training_dataset(str(output), columns=["x", "window_index"])
    assert dataset.count() == 8
    shapes = {tuple(b["x"].shape[1:]) for b in dataset.iter_batches(batch_size=3, batch_format="numpy")}
    assert shapes == {(19, 30, 200)}
    limited = read_windows(str(output), columns=["x"], limit=3)
    assert list(limited) == ["x"] and limited["x"].shape == (3, 19, 30, 200)


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_corpus_without_windows_fails_fast(corpus, tmp_path, ray_local):
    with pytest.raises(FileNotFoundError, match=r"no prepared corpus at .*corpus\.json is missing"):
        corpus_info(str(tmp_path / "nothing"))
    output = tmp_path / "all-bad"
    summary = prepare_corpus([str(corpus / "bad")], str(output), preset="cbramod-eeg", preset_options=EEG_OPTIONS)
    assert summary["windows"] == 0 and summary["rejected"] == 7
    with pytest.raises(ValueError, match=r"holds no windows \(7 files rejected"):
        training_dataset(str(output))


def test_listing_groups_wfdb_records_and_honours_the_format(tmp_path):
    synthetic.write_ptbxl(tmp_path, n_records=2)
    items, ignored = list_inputs([str(tmp_path)])
    assert [Path(i.path).name for i in items] == ["00001_hr.hea", "00002_hr.hea"]
    assert items[0].bytes == (tmp_path / "records500/00000/00001_hr.hea").stat().st_size + 5000 * 24
    assert [Path(p).name for p, _ in ignored] == ["ptbxl_database.csv"]
    items, ignored = list_inputs([str(tmp_path)], fmt="edf")
    assert items == [] and len(ignored) == 5
    with pytest.raises(ValueError, match=r"format must be one of \('auto', 'wfdb', 'edf'"):
        list_inputs([str(tmp_path)], fmt="csv")


def test_a_recording_that_keeps_failing_on_storage_is_rejected_as_retryable(s3_endpoint):
    windows, row = process_file(
        InputFile("s3://bucket/rec.edf", "auto", 10), get_preset("cbramod-eeg"),
        storage.RetryPolicy(attempts=2, first_delay_s=0.01),
        {"endpoint_url": "http://127.0.0.1:9", "skip_instance_cache": True,
         "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}})
    assert windows == [] and row["status"] == "rejected" and row["retryable"]
    assert row["reason"].startswith("storage: download s3://bucket/rec.edf: still failing after 2 attempts")


@dataclass(frozen=True)
class KillWorkerOn:
    """A step that kills its worker process on one subject: a file that crashes a native reader."""

    subject: str

    def __call__(self, rec):
        if rec.subject == self.subject:
            os._exit(3)
        return rec


@pytest.mark.slow  # end to end: several runs of the pipeline, killed or failing on purpose
def test_a_file_that_kills_its_worker_is_isolated_and_rejected(corpus, tmp_path, ray_local):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    recipe = get_preset("cbramod-eeg", **EEG_OPTIONS)
    crashing = Preset("crash-test", (KillWorkerOn("aaaaaaab"), *recipe.steps), recipe.windows)
    summary = prepare_corpus([str(corpus / "tueg")], str(tmp_path / "out"), preset=crashing, task_retries=0)
    manifest = read_manifest(str(tmp_path / "out")).set_index("path")
    good, bad = (str(corpus / name) for name in list(EXPECTED)[:2])
    assert (manifest.loc[good, "status"], manifest.loc[good, "n_windows"]) == ("ok", 2)
    assert manifest.loc[bad, "status"] == "rejected"
    assert manifest.loc[bad, "reason"].startswith("worker failed on this file:")
    assert summary["windows"] == 2 and len(read_windows(str(tmp_path / "out"))["x"]) == 2


@pytest.mark.slow  # end to end: runs the preparation pipeline on Ray over inputs of its own
def test_recordings_with_different_window_shapes_cannot_share_a_corpus(tmp_path, ray_local):
    synthetic.write_deap(tmp_path / "raw", n_trials=1)  # 32 EEG + GSR
    synthetic.write_dreamer(tmp_path / "raw", n_subjects=1, n_trials=1, stimulus_s=10.0)  # 14 EEG + 2 ECG
    with pytest.raises(ValueError, match=r"different window shapes .*prepare these datasets into separate outputs"):
        prepare_corpus([str(tmp_path / "raw")], str(tmp_path / "out"), preset="physiosync")
    assert not (tmp_path / "out" / "corpus.json").exists()  # training cannot start on it
    assert len(read_manifest(str(tmp_path / "out"))) == 2  # yet every file is accounted for


@pytest.mark.slow  # end to end: several runs of the pipeline, killed or failing on purpose
def test_a_killed_run_resumes_without_redoing_committed_recordings(ray_local, tmp_path):
    """The driver is SIGKILLed after its first commit (no clean-up runs); the same command again
    skips what was committed, redoes the rest, and accounts for every recording exactly once."""
    from physiofm.data.synthetic import write_ptbxl
    from tests.conftest import REPO_ROOT

    write_ptbxl(tmp_path / "raw", n_records=96, seed=1)  # 12 commits stream in: enough to be cut short
    output = tmp_path / "out"
    command = [sys.executable, "jobs/prepare_corpus.py", "--input", str(tmp_path / "raw"), "--output", str(output),
               "--modality", "ecg", "--files-per-commit", "8", "--json"]
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    victim = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list((output / "_progress").glob("2*.parquet")):
        assert victim.poll() is None and time.time() < deadline, victim.communicate()
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    committed = {row["path"] for row in CorpusLayout(str(output)).committed_rows()}
    assert 8 <= len(committed) < 96  # killed mid-run, after at least one commit

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(committed) and summary["processed_now"] == 96 - len(committed)
    assert (summary["files"], summary["ok"], summary["windows"]) == (96, 96, 96)
    manifest = read_manifest(str(output))
    assert len(manifest) == 96 and manifest["path"].is_unique
    windows = read_windows(str(output), columns=["recording"])
    assert sorted(windows["recording"]) == sorted(manifest["path"])  # no window twice, none missing
