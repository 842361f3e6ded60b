"""The SCMM and PhysioSync jobs end to end with no arguments, on their demo corpora: two workers on
CPU, losses fall, the same command with a larger --max-steps resumes from the checkpoint, and the
exported encoders rebuild from their files. PhysioSync's demo runs 16 steps of reduced encoders: its
contrastive losses start noisy at batches of 8 segments.

Each job runs as a subprocess joined to the session's Ray cluster (one cluster, not one per run)
with the session's demo cache (each demo corpus written and prepared once).
"""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from physiofm.data import read_windows
from physiofm.data.splits import choose_validation_groups
from physiofm.encoders.physiosync import PhysioSyncEncoder, PhysioSyncEncoderConfig
from physiofm.encoders.scmm import FeatureScaling, FeatureScalingConfig, SCMMEncoder, SCMMEncoderConfig
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def run_job(job_env, cwd, script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / script), *args], cwd=cwd, env=job_env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return proc.stdout


def train_twice(job_env, tmp_path, script: str, steps: int) -> tuple[str, str, object]:
    """The job with no arguments (its demo: `steps` steps), then again to `steps` + 4 (same output
    and name): (output 1, output 2, runs dir)."""
    first = run_job(job_env, tmp_path, script)
    return first, run_job(job_env, tmp_path, script, "--max-steps", str(steps + 4)), tmp_path / "runs"


def losses(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"\[physiofm\] step \d+/\d+ loss=([0-9.]+)", output)]


def assert_falls_then_resumes(first: str, second: str, run: str, steps: int) -> None:
    curve, resumed = losses(first), losses(second)
    print(f"{run}: losses {curve}, resumed {resumed}")  # shown with -s or on failure
    assert len(curve) == steps and np.mean(curve[-4:]) < 0.92 * np.mean(curve[:4]), curve
    assert "started from scratch" in first and f"global_step={steps}" in first
    assert f"run '{run}' has checkpoints" in second
    assert re.search(rf"resumed from .*step_{steps:08d} \(step {steps}\)", second)
    assert f"global_step={steps + 4}" in second and len(resumed) == 4
    assert np.mean(resumed) < np.mean(curve[:4]), (curve, resumed)  # continued, not restarted


def load(path):
    stored = torch.load(path, weights_only=True)
    assert stored["format"] == "physiofm.module.v1"
    return stored


def assert_export_sizes(export, names) -> None:
    """Each export holds its own tensors only (DeepSpeed's flat buffer would make each the whole model)."""
    for name in names:
        stored = torch.load(export / f"{name}.pt", weights_only=True)
        own = sum(t.numel() * t.element_size() for t in stored["state_dict"].values())
        size = (export / f"{name}.pt").stat().st_size
        assert size <= 1.5 * own + 2**16, (name, size, own)


def test_scmm_job_pretrains_on_its_demo_seed_corpus_resumes_and_exports(job_env, demo_cache, tmp_path):
    first, second, out = train_twice(job_env, tmp_path, "pretrain_scmm.py", 12)
    assert "no --corpus given: using the embedded demo corpus" in first
    assert "preparing windows with preset 'scmm-de'" in first
    assert "validation: 1 groups by ['recording'] held out" in first and "validation loss" in first
    assert_falls_then_resumes(first, second, "scmm-seed-seed_iv", 12)

    export = out / "scmm-seed-seed_iv" / "step_00000016" / "export"
    stored = load(export / "encoder.pt")
    assert stored["config"] == {"n_channels": 62, "n_bands": 5, "width": 128}
    encoder = SCMMEncoder(SCMMEncoderConfig(**stored["config"]))
    encoder.load_state_dict(stored["state_dict"])
    fitted = load(export / "feature_scaling.pt")["config"]
    scaling = FeatureScaling(FeatureScalingConfig(**fitted))
    assert_export_sizes(export, ["encoder", "feature_scaling"])

    # the scaler the workers used is the fit on the training recording only
    corpus = demo_cache / "demo" / "scmm-seed-seed_iv" / "windows"
    windows = read_windows(str(corpus), columns=["x", "recording"])
    held_out = choose_validation_groups(sorted(set(windows["recording"])), 0.5, seed=0)
    train = windows["x"][~np.isin(windows["recording"], sorted(held_out))]
    assert 0 < len(train) < len(windows["x"])
    np.testing.assert_array_equal(np.float32(fitted["minimum"]), train.reshape(len(train), -1).min(axis=0))
    np.testing.assert_array_equal(np.float32(fitted["maximum"]), train.reshape(len(train), -1).max(axis=0))
    with torch.no_grad():
        features = encoder.eval()(scaling(torch.from_numpy(train[:4])))
    assert features.shape == (4, encoder.config.feature_dim) and torch.isfinite(features).all()


def test_physiosync_job_pretrains_both_resolutions_on_its_demo_deap_corpus_resumes_and_exports(job_env, tmp_path):
    first, second, out = train_twice(job_env, tmp_path, "pretrain_physiosync.py", 16)
    assert "physiosync train: 48 segments of all 4 subjects; 0 segments dropped" in first
    assert_falls_then_resumes(first, second, "physiosync-deap-both", 16)

    export = out / "physiosync-deap-both" / "step_00000020" / "export"
    expected = {"eeg_long": (32, 640), "peripheral_long": (1, 640), "eeg_short": (32, 128),
                "peripheral_short": (1, 128)}
    assert sorted(p.stem for p in export.glob("*.pt")) == sorted(expected)
    assert_export_sizes(export, expected)
    for name, (channels, samples) in expected.items():
        stored = load(export / f"{name}.pt")
        encoder = PhysioSyncEncoder(PhysioSyncEncoderConfig(**stored["config"]))
        encoder.load_state_dict(stored["state_dict"])
        assert (encoder.config.n_channels, encoder.config.n_samples) == (channels, samples)
        with torch.no_grad():
            features = encoder.eval()(torch.randn(2, channels, samples))
        assert features.shape == (2, encoder.config.out_dim) and torch.isfinite(features).all()
