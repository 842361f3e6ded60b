"""The benchmarks' --quick modes: every figure produced, and both sides computed the same windows.

(Their full-mode figures are in BENCHMARKS.md; timings are never asserted here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run_quick(script: str, ray_local, tmp_path, *args: str) -> dict:
    """`python benchmarks/<script> --quick ARGS`, joined to the session's Ray."""
    report = tmp_path / f"{script}.json"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--quick", *args, "--json", str(report)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(report.read_text())


def test_prep_throughput_quick_gives_every_figure_and_the_reference_windows(ray_local, tmp_path):
    report = run_quick("prep_throughput.py", ray_local, tmp_path, "--ceiling")
    for kind, tolerance in (("eeg", 0.02), ("ecg", 1e-4)):
        result = report[kind]
        windows = result["windows"]
        assert windows["same_windows"] and windows["matched"] == result["reference"]["windows"] > 0
        assert windows["relative_rms"] < tolerance and windows["max_window_relative_rms"] < tolerance
        parallel = result["parallel_per_file"]  # the per-file code in one plain process per CPU of the cluster
        assert parallel["processes"] == report["cpus"] and parallel["cpu_s"] > 0
        assert result["per_file"]["windows"] == parallel["windows"] == result["pipeline"]["windows"] == windows["matched"]
        for side in (result["reference"], result["per_file"], parallel, result["pipeline"]["wall"],
                     result["pipeline"]["processing"]):
            assert side["files_per_s"] > 0 and side["windows_per_s"] > 0 and side["mb_per_s"] > 0
        assert result["reference"]["peak_rss_mib"] > 0 and result["pipeline"]["peak_rss_mib"] > 0
        assert all(value > 0 for value in result["ratios"].values())
        assert result["pipeline"]["fixed_costs_s"]["workers_start"] >= 0


def test_train_throughput_quick_compares_the_platform_with_the_plain_loop(ray_local, tmp_path):
    report = run_quick("train_throughput.py", ray_local, tmp_path)
    plain = report["results"]["plain loop, 1 thread(s)"]
    platform = report["results"]["platform 1 worker(s) x 1 thread(s), ZeRO-0"]
    assert plain["samples_per_s"] > 0 and platform["samples_per_s"] > 0 and platform["ratio"] > 0
    assert platform["global_step"] == report["steps"] and platform["torch_threads"] == 1
    assert 0.0 <= platform["input_wait_share"] <= 1.0


def test_scaling_quick_reports_time_and_memory_per_corpus_size(ray_local):
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import prep_scaling

    report = prep_scaling.main(["--quick"])
    x1, x4 = report["sizes"]["x1"], report["sizes"]["x4"]
    assert (x1["files"], x4["files"]) == (8, 32) and x4["windows"] == 4 * x1["windows"] > 0
    assert x1["processing_s"] > 0 and x4["processing_s"] > 0 and x4["time_per_x1"] > 0


def test_gpu_benchmark_runs_on_cpu_and_counts_the_model_flops(ray_local):
    sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import gpu

    import torch

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        assert gpu.device_and_peak(None)[2] is None  # a CPU has no published bf16 peak: no MFU unless given one
    report = gpu.main(["--quick", "--peak-tflops", "0.5"])
    assert report["device"].startswith("cpu" if on_cpu else "cuda") and report["precision"] == "bf16 autocast"
    assert report["step_ms"] > 0 and report["samples_per_s"] > 0 and report["model_gflops_per_step"] > 0
    assert 0 < report["mfu"] == pytest.approx(report["achieved_tflops"] / 0.5, rel=0.01)
    assert report["input_samples_per_s"] > 0 and isinstance(report["input_keeps_up"], bool)
