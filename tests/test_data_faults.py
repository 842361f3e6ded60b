"""Faults in a real pipeline run (slow: a local Ray): bombs beside good files, a file that takes its
worker past the memory limit, and a full output disk."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray

from physiofm.data import bad_files, synthetic
from physiofm.data.corpus import CorpusLayout, read_manifest
from physiofm.data.loader import read_windows
from physiofm.data.pipeline import OutputStorageError, prepare_corpus
from physiofm.data.presets import Preset, get_preset
from tests.test_data_output import small_filesystem

pytestmark = pytest.mark.slow

EEG_SHORT = {"min_duration_s": 0, "trim_s": 0, "window_s": 10}


@dataclass(frozen=True)
class AllocateOn:
    """A step that allocates `mib` MiB in one native call on one subject's recording: a decoder's
    appetite that no header declared."""

    subject: str
    mib: int

    def __call__(self, rec):
        if rec.subject == self.subject:
            rec.meta["held"] = np.ones(self.mib * 2**20 // 8)
        return rec


def write_bomb_corpus(root: Path) -> dict[str, str]:
    """Good EDFs and the issue's bombs side by side; {file: expected reason code ('' = ok)}."""
    good = synthetic.write_tueg(root / "tueg", n_subjects=2, duration_s=20.0)
    bombs = root / "bombs"
    bombs.mkdir()
    expected = {str(path): "" for path in good}
    expected[str(bad_files.stretched_edf(good[0], bombs / "stretched.edf", 3000))] = "sampling_rate"
    expected[str(bad_files.deap_uninitialised(bombs / "s91.dat"))] = "too_large"
    expected[str(bad_files.deap_allocating_builtin(bombs / "s92.dat"))] = "too_large"
    expected[str(bad_files.deap_nested_key(bombs / "s93.dat"))] = "hostile_pickle"
    expected[str(bad_files.mat_zlib_bomb(bombs / "seed" / "djc_20140101.mat", inflated_mib=512))] = "too_large"
    expected[str(bad_files.wfdb_repeated_segments(bombs / "wfdb", repeats=2000))] = "too_large"
    return expected


def test_bombs_and_a_file_past_the_memory_limit_are_rejected_and_the_rest_committed(ray_local, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    expected = write_bomb_corpus(tmp_path / "raw")
    recipe = get_preset("cbramod-eeg", **EEG_SHORT)
    heavy = Preset("heavy-test", (AllocateOn("aaaaaaab", 3000), *recipe.steps), recipe.windows)
    lines: list[str] = []
    summary = prepare_corpus([str(tmp_path / "raw")], str(tmp_path / "out"), preset=heavy, files_per_task=16,
                             worker_memory_mib=1200, progress=lines.append)
    manifest = read_manifest(str(tmp_path / "out")).set_index("path")
    hog = next(p for p in expected if "aaaaaaab" in p)
    assert manifest.loc[hog, "reason_code"] == "too_large"
    assert manifest.loc[hog, "reason"].startswith("needs more than 1.2 GiB of memory to process"), manifest.loc[hog]
    assert sum("a worker was stopped over 1 file(s)" in line for line in lines) == 1, lines  # no retry of it
    for path, code in expected.items():
        row = manifest.loc[path]
        if path == hog:
            continue
        assert (row.reason_code, row.status) == (code, "ok" if not code else "rejected"), (path, row.reason)
        assert len(row.reason) <= 400
    assert summary["ok"] == 1 and summary["windows"] == 2 == len(read_windows(str(tmp_path / "out"))["x"])


def test_a_full_output_disk_stops_the_run_without_blaming_a_recording_and_the_resume_finishes(ray_local, tmp_path):
    synthetic.write_ptbxl(tmp_path / "raw", n_records=64, seed=2)
    with small_filesystem(tmp_path / "disk", "2m") as disk:
        output = disk / "out"
        with pytest.raises(OutputStorageError, match=r"No space left on device \[ENOSPC\].*run the same command "
                                                     r"again to resume"):
            prepare_corpus([str(tmp_path / "raw")], str(output), preset="ecg", files_per_commit=16,
                           progress=lambda line: None)
        rows = CorpusLayout(str(output)).committed_rows()  # every commit reads: none left truncated
        assert all(r["status"] == "ok" for r in rows) and len(rows) < 64, [r["reason"] for r in rows][:3]
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        summary = prepare_corpus([str(tmp_path / "raw")], str(output), preset="ecg", progress=lambda line: None)
        assert (summary["files"], summary["ok"], summary["windows"], summary["skipped"]) == (64, 64, 64, len(rows))
        windows = read_windows(str(output), columns=["recording"])
        assert sorted(windows["recording"]) == sorted(read_manifest(str(output))["path"])  # each record once
        assert json.loads((output / "corpus.json").read_text())["counts"]["ok"] == 64
