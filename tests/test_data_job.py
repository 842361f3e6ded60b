"""jobs/prepare_corpus.py: the CLI over prepare_corpus, with and without inputs."""
from __future__ import annotations

import argparse
import json
import runpy
import shlex
import tempfile
from pathlib import Path

import pytest

from physiofm.data import synthetic
from physiofm.data.loader import corpus_info
from physiofm.platform.config import TrainConfig, merge
from physiofm.platform.trainer import check_corpus
from tests.conftest import REPO_ROOT

JOB = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "prepare_corpus.py"), run_name="job")


@pytest.mark.slow  # end to end: the job's main, preparing a corpus on Ray
def test_job_without_arguments_prepares_the_demo_corpus_into_the_cache(tmp_path, demo_cache, ray_local,
                                                                       monkeypatch, capsys):
    """No flags: the ECG demo corpus of the pretraining job, prepared under the cache folder
    ($PHYSIOFM_CACHE/corpora), nothing left in the working folder or the temp folder, and the
    summary names the corpus and the pretraining command that reads it."""
    monkeypatch.setenv("PHYSIOFM_CACHE", str(demo_cache))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # a temp folder of its own: the shared one also holds what tests running beside this one make
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(temp)
    assert JOB["main"]([]) == 0
    out = capsys.readouterr().out
    corpus = demo_cache / "corpora" / "demo-ecg"
    info = corpus_info(str(corpus))
    assert (info["counts"]["files"], info["counts"]["ok"], info["counts"]["windows"]) == (48, 48, 48)
    assert info["columns"] == {"x": {"shape": [12, 10, 200], "dtype": "float32"},
                               "channel_mask": {"shape": [12], "dtype": "bool"}}
    assert f"corpus       {corpus}" in out and "48 windows from 48 of 48 files" in out
    assert out.rstrip().endswith("=" * 72)
    assert not list(work.iterdir())  # nothing in the working folder
    assert not list(temp.iterdir())  # nothing left in the temp folder

    # the next command, as printed: pretrain_ecg parses it and takes its corpus as prepared
    command = next(line.split("next", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("next"))
    words = shlex.split(command)
    assert words[:2] == ["python", "jobs/pretrain_ecg.py"]
    pretrain = runpy.run_path(str(REPO_ROOT / "jobs" / "pretrain_ecg.py"), run_name="job")
    args = pretrain["parser"]().parse_args(words[2:])
    assert args.corpus == str(corpus)
    cfg = TrainConfig.from_dict(merge(pretrain["DEFAULTS"], {"data": {"corpus": args.corpus}}))
    check_corpus(cfg, args.corpus, corpus_info(args.corpus))  # shapes and window count fit the job


def test_empty_or_missing_input_fails_before_ray_starts_naming_the_path(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("no recordings here\n")
    for given, reason in ((tmp_path / "notes", "holds no recordings to read (1 other files"),
                          (tmp_path / "missing", "no such file or folder")):
        assert JOB["main"](["--input", str(given), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert f"error: --input: {given}" in err and reason in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # end to end: the job's main, preparing a corpus on Ray
def test_job_with_inputs_modality_and_preset_options(tmp_path, ray_local, capsys):
    synthetic.write_tueg(tmp_path / "raw", n_subjects=2, duration_s=40.0)
    (tmp_path / "raw" / "broken.edf").write_bytes(b"not an edf")
    argv = ["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out"), "--modality", "eeg",
            "--format", "edf", "--preset-arg", "min_duration_s=30", "--preset-arg", "trim_s=5"]
    assert JOB["main"]([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["ok"], summary["rejected"], summary["windows"]) == (2, 1, 2)  # 40 s - 2×5 s → one 30-s window
    crops = [step for step in corpus_info(str(tmp_path / "out"))["preset"]["steps"] if step["step"] == "Crop"]
    steps = [step["step"] for step in corpus_info(str(tmp_path / "out"))["preset"]["steps"]]
    assert crops == [{"step": "Crop", "min_duration_s": 30, "trim_s": 0}, {"step": "Crop", "min_duration_s": 0, "trim_s": 5}]
    assert steps.index("MNEResampleFilter") < len(steps) - 1 - steps[::-1].index("Crop")  # trims after the filters


def test_preset_arguments_parse_as_json_values():
    assert JOB["preset_argument"]("band=[0.5, 40]") == ("band", (0.5, 40))
    assert JOB["preset_argument"]("notch_hz=50") == ("notch_hz", 50)
    assert JOB["preset_argument"]("missing=reject") == ("missing", "reject")
    with pytest.raises(argparse.ArgumentTypeError, match="key=value"):
        JOB["preset_argument"]("min_duration_s")
