"""Soak: a prepare run killed at random points (SIGKILL of its driver or of one of its workers),
resumed each time, ends with the same windows, bit for bit, and the same manifest as a run never
interrupted. By hand (a few minutes): `pytest -m soak tests/test_soak_prepare.py -s`.

Figures (kills of each kind, commits before each kill, wall time) are printed and written to
`$PHYSIOFM_SOAK_REPORT` when set.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from physiofm.data import bad_files, synthetic
from physiofm.data.corpus import read_manifest
from physiofm.data.loader import read_windows
from tests.conftest import REPO_ROOT
from tests.test_data_pipeline import assert_same_windows, rows_by_key

pytestmark = [pytest.mark.slow, pytest.mark.soak]

KILLS = int(os.environ.get("PHYSIOFM_SOAK_KILLS", "20"))
SEED = int(os.environ.get("PHYSIOFM_SOAK_SEED", "12"))
# The driver the soak kills: the pipeline as a job runs it, joined to the test's cluster. Worker
# deaths are the soak's doing, not the files': they never count as a file's fault here.
DRIVER = """
import json, sys
from physiofm.data.pipeline import prepare_corpus
summary = prepare_corpus([sys.argv[1]], sys.argv[2], preset="ecg", files_per_commit=24, task_retries=1000,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
print(json.dumps({k: summary[k] for k in ("files", "ok", "rejected", "windows", "skipped", "processed_now")}))
"""


def write_soak_corpus(root: Path) -> Path:
    synthetic.write_ptbxl(root / "ptb", n_records=600, seed=7)
    bad = root / "bad"
    bad.mkdir()
    bad_files.nan_record(bad)
    bad_files.deap_uninitialised(bad / "s91.dat")
    bad_files.wfdb_repeated_segments(bad / "wfdb", repeats=500)
    (bad / "empty.hea").write_bytes(b"")
    return root


def map_workers(ray_local) -> list:
    import psutil

    raylet = ray_local._private.worker._global_node.all_processes["raylet"][0].process.pid
    return [p for p in psutil.Process(raylet).children(recursive=True)
            if "MapBatches(_FileWorker)" in " ".join(p.cmdline())]


def commits(output: Path) -> int:
    return len(list((output / "_progress").glob("2*.parquet")))


def start(corpus: Path, output: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(corpus), str(output)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def test_a_run_killed_twenty_times_ends_with_the_windows_of_an_uninterrupted_run(ray_local, tmp_path):
    corpus = write_soak_corpus(tmp_path / "raw")
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    rng = random.Random(SEED)
    started = time.perf_counter()
    reference = tmp_path / "reference"
    proc = start(corpus, reference, env)
    expected = json.loads(proc.communicate(timeout=1200)[0])
    uninterrupted_s = time.perf_counter() - started

    output = tmp_path / "killed"
    kills: list[dict] = []
    started = time.perf_counter()
    proc = start(corpus, output, env)
    while len(kills) < KILLS:
        # A random point of the run: mostly once it has committed more since the last kill (a start
        # on a loaded machine outlasts any fixed delay: kills on a clock all land before a commit),
        # sometimes wherever it is, starting or resuming.
        before = commits(output)
        deadline = time.time() + 600
        if rng.random() < 0.75:
            while commits(output) == before and proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 3.0))
        if proc.poll() is not None:  # it finished before the next kill: go again from scratch
            proc = start(corpus, output, env) if len(kills) < KILLS else proc
            continue
        done = commits(output)
        victims = map_workers(ray_local)
        if rng.random() < 0.5 or not victims:
            proc.send_signal(signal.SIGKILL)
            proc.wait(60)
            kills.append({"kind": "driver", "commits_before": done, "at_s": round(time.perf_counter() - started, 1)})
            proc = start(corpus, output, env)  # the resume: the same command again
        else:
            rng.choice(victims).send_signal(signal.SIGKILL)
            kills.append({"kind": "worker", "commits_before": done, "at_s": round(time.perf_counter() - started, 1)})
    final = json.loads(proc.communicate(timeout=1200)[0])
    killed_s = time.perf_counter() - started

    figures = {"kills": len(kills), "driver_kills": sum(k["kind"] == "driver" for k in kills),
               "worker_kills": sum(k["kind"] == "worker" for k in kills), "uninterrupted_s": round(uninterrupted_s, 1),
               "killed_and_resumed_s": round(killed_s, 1), "files": final["files"], "windows": final["windows"],
               "commits": commits(output), "kill_log": kills}
    # killed inside the run (after its first commit, before its last), not only at its starts
    figures["kills_inside_the_run"] = sum(0 < k["commits_before"] < figures["commits"] for k in kills)
    print(json.dumps(figures, indent=1))
    if os.environ.get("PHYSIOFM_SOAK_REPORT"):
        Path(os.environ["PHYSIOFM_SOAK_REPORT"]).write_text(json.dumps(figures, indent=1))
    assert figures["kills_inside_the_run"] >= KILLS // 2, kills
    assert (final["files"], final["ok"], final["rejected"], final["windows"]) == (
        expected["files"], expected["ok"], expected["rejected"], expected["windows"])
    assert_same_windows(rows_by_key(read_windows(str(output)), str(corpus)),
                        rows_by_key(read_windows(str(reference)), str(corpus)))
    columns = ["path", "status", "reason_code", "reason", "n_windows", "n_windows_rejected", "duration_s", "sfreq"]
    mine, theirs = (read_manifest(str(o))[columns].sort_values("path").reset_index(drop=True)
                    for o in (output, reference))
    assert mine.equals(theirs)
