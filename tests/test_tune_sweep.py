"""One 6-trial ASHA sweep of `jobs/tune_emotion.py` on the demo DREAMER corpus, asserted many ways.

The sweep's driver is killed with SIGKILL once its saved state records finished trials, and the
same command is run again: it resumes (finished trials are not run again) and ends with the report.
Then: the report names the best configuration and ASHA's stops; the best configuration re-run with
`jobs/finetune_emotion.py` gives the same validation metric, bit for bit; optuna-dashboard on
127.0.0.1 serves the study with every trial and its value; TensorBoard's event files hold one run
per trial with the HParams summary.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from physiofm.platform.sweep import recorded_trials
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow
TRIALS, EPOCHS, FOLDS = 6, 6, 2


def _start(command, env):
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    return process, lines, reader


def _trials_in(lines, word):
    """Trial ids of the progress lines `[tune] trial_ID WORD ...` of a run."""
    return {line.split()[1].removeprefix("trial_") for line in lines
            if line.startswith("[tune] trial_") and line.split()[2].rstrip(":") == word}


@pytest.fixture(scope="module")
def sweep(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "PHYSIOFM_CACHE": str(root / "cache"), "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    address = ray_local.get_runtime_context().gcs_address
    command = [sys.executable, "jobs/tune_emotion.py", "--num-samples", str(TRIALS), "--max-concurrent", "2",
               "--storage", str(root / "runs"), "--name", "demo", "--epochs", str(EPOCHS), "--folds", str(FOLDS),
               "--address", address]
    sweep_dir = root / "runs" / "demo"
    started = time.perf_counter()
    first, first_lines, reader = _start(command, env)
    kept: set[str] = set()
    while first.poll() is None and time.perf_counter() - started < 240:
        recorded = recorded_trials(str(sweep_dir))
        kept = {t for t, status in recorded.items() if status == "TERMINATED"}
        if len(kept) >= 2:
            break
        time.sleep(0.5)
    assert first.poll() is None, "the sweep ended before it could be killed:\n" + "".join(first_lines)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    reader.join(timeout=10)
    (root / "first.log").write_text("".join(first_lines))
    # what the resumed run starts from: the state Tune saved last, read after the kill
    kept = {t for t, status in recorded_trials(str(sweep_dir)).items() if status == "TERMINATED"}
    sizes = {t: (sweep_dir / f"trial_{t}" / "result.json").stat().st_size for t in kept}
    killed_at = time.perf_counter() - started
    second = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420)
    (root / "second.log").write_text(second.stdout + second.stderr)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    lines = second.stdout.splitlines()
    return {"dir": sweep_dir, "kept": kept, "sizes": sizes, "first": first_lines, "second": lines,
            "summary": json.loads((sweep_dir / "report" / "summary.json").read_text()), "env": env,
            "seconds": time.perf_counter() - started, "killed_at": killed_at, "address": address}


def test_sweep_stops_trials_early_and_its_report_names_the_best_configuration(sweep):
    s = sweep["summary"]
    print(f"sweep: killed at {sweep['killed_at']:.0f} s, done at {sweep['seconds']:.0f} s (shared machine); "
          f"ASHA stops {s['asha_stops']}, best {s['best']}")
    assert s["trials"]["total"] == TRIALS and s["trials"]["errored"] == 0
    assert s["trials"]["stopped_early"] >= 1 and all(int(e) < EPOCHS for e in s["asha_stops"])
    assert s["trials"]["completed"] + s["trials"]["stopped_early"] == TRIALS
    text = (sweep["dir"] / "report" / "summary.md").read_text()
    assert f"**{s['best']['trial']}**" in text and f"**{s['best']['value']:.4f}**" in text
    for name, value in s["best"]["config"].items():
        assert f"| `{name}` |" in text, name
    assert s["best"]["value"] == max(t["value"] for t in s["top"])
    pngs = sorted(p.name for p in (sweep["dir"] / "report").glob("*.png"))
    assert pngs == ["learning_curves.png", "metric_vs_parameters.png", "parallel_coordinates.png"]
    assert "test" in s and s["test"]["mean"]["balanced_accuracy"] is not None
    assert (s["sessions"], s["resumed"], s["interrupted"]) == (2, 1, 1)
    assert "wrote" in "\n".join(sweep["second"]) and "next:" in "\n".join(sweep["second"])


def test_killed_sweep_resumes_without_running_its_finished_trials_again(sweep):
    kept, rerun = sweep["kept"], _trials_in(sweep["second"], "started")
    finished_before = _trials_in(sweep["first"], "finished")
    print(f"kept {len(kept)} finished trials {sorted(kept)}, ran {len(rerun)} in the resumed run {sorted(rerun)}")
    assert len(kept) >= 2 and kept <= finished_before
    assert not kept & rerun, "a finished trial ran again"
    assert len(kept) + len(rerun) == TRIALS
    assert any(f"{len(kept)} finished trials are kept" in line for line in sweep["second"])
    for trial, size in sweep["sizes"].items():  # their results were not appended to by the resumed run
        assert (sweep["dir"] / f"trial_{trial}" / "result.json").stat().st_size == size, trial


def test_the_best_configuration_re_run_with_the_fine_tuning_job_gives_the_same_validation_metric(sweep, tmp_path,
                                                                                                 monkeypatch):
    import importlib.util
    import shlex

    s = sweep["summary"]
    argv = shlex.split(s["best"]["command"])[2:] + ["--output", str(tmp_path / "rerun"), "--no-models"]
    monkeypatch.setenv("PHYSIOFM_CACHE", sweep["env"]["PHYSIOFM_CACHE"])
    spec = importlib.util.spec_from_file_location("finetune_emotion_job", REPO_ROOT / "jobs" / "finetune_emotion.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main(argv) == 0
    rerun = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    metric = s["metric"].replace("validation_", "")
    print(f"trial {s['best']['value']!r}, re-run {rerun['validation'][metric]!r}: difference "
          f"{abs(rerun['validation'][metric] - s['best']['value'])}")
    assert rerun["validation"][metric] == s["best"]["value"]  # bit for bit on CPU
    assert rerun["validation"] == {k: v for k, v in s["best"]["validation"].items() if k in rerun["validation"]}
    assert s["test"]["validation"][metric] == s["best"]["value"]  # the sweep's own final run, too
    assert rerun["mean"] == s["test"]["mean"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_optuna_dashboard_on_loopback_serves_the_study_with_every_trial_and_its_value(sweep):
    port = _free_port()
    url = f"sqlite:///{sweep['dir'] / 'optuna.db'}"
    executable = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or "optuna-dashboard"
    dashboard = subprocess.Popen([executable, url, "--host", "127.0.0.1", "--port", str(port)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        studies = None
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as answer:
                    studies = json.load(answer)["study_summaries"]
                break
            except OSError:
                if dashboard.poll() is not None:
                    break
                time.sleep(0.25)
        assert studies is not None, "optuna-dashboard did not answer on 127.0.0.1: " + (
            dashboard.stderr.read() if dashboard.poll() is not None else "still starting after 60 s")
        study = next(st for st in studies if st["study_name"] == "demo")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as answer:
            detail = json.load(answer)
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=10)
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(complete) == TRIALS, [t["state"] for t in detail["trials"]]
    assert sorted(round(t["values"][0], 9) for t in complete) == sorted(
        round(v, 9) for v in _trial_values(sweep["dir"]).values())
    params = {p["name"] for p in complete[0]["params"]}
    assert {"head", "hidden", "dropout", "lr"} <= params


def _trial_values(sweep_dir: Path) -> dict[str, float]:
    out = {}
    for folder in sweep_dir.glob("trial_*"):
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        out[folder.name] = rows[-1]["validation_kappa"]
    return out


def test_tensorboard_event_files_hold_one_run_per_trial_with_the_hparams_summary(sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    runs = sorted(sweep["dir"].glob("trial_*"))
    assert len(runs) == TRIALS
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"scalars": 0})
        events.Reload()
        curve = events.Scalars("ray/tune/validation_kappa")
        assert 2 <= len(curve) <= EPOCHS and curve[-1].value == pytest.approx(_trial_values(sweep["dir"])[run.name])
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = dict(start.session_start_info.hparams)
        assert {"head", "hidden", "dropout", "lr"} <= set(hparams), run.name
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
        assert "ray/tune/validation_kappa" in {m.name.tag for m in experiment.experiment.metric_infos}
