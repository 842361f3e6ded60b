"""jobs/prepare_corpus.py: the CLI over prepare_corpus, with and without inputs."""
from __future__ import annotations

import argparse
import json
import runpy
from pathlib import Path

import pytest

from physiofm.data import synthetic
from physiofm.data.loader import corpus_info

JOB = runpy.run_path(str(Path(__file__).resolve().parents[1] / "jobs" / "prepare_corpus.py"), run_name="job")


def test_job_without_inputs_prepares_the_ecg_demo_corpus(tmp_path, ray_local, capsys):
    assert JOB["main"](["--output", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files"], summary["ok"], summary["windows"]) == (4, 4, 4)  # 4 PTB-XL-like 10-s records
    info = corpus_info(str(tmp_path / "out"))
    assert info["columns"] == {"x": {"shape": [12, 10, 200], "dtype": "float32"},
                               "channel_mask": {"shape": [12], "dtype": "bool"}}


def test_job_with_inputs_modality_and_preset_options(tmp_path, ray_local, capsys):
    synthetic.write_tueg(tmp_path / "raw", n_subjects=2, duration_s=40.0)
    (tmp_path / "raw" / "broken.edf").write_bytes(b"not an edf")
    argv = ["--input", str(tmp_path / "raw"), "--output", str(tmp_path / "out"), "--modality", "eeg",
            "--format", "edf", "--preset-arg", "min_duration_s=30", "--preset-arg", "trim_s=5"]
    assert JOB["main"](argv) == 0
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
