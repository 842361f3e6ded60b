"""The SCMM and PhysioSync jobs end to end on their demo corpora: two workers on CPU, losses fall,
a second run resumes from the checkpoint, and the exported encoders rebuild from their files.
PhysioSync runs 16 steps: its contrastive losses start noisy at batches of 8 segments.

Each job runs as a subprocess joined to the session's Ray cluster (one cluster, not one per run);
the demo corpora are written into a temporary cache through the synthetic writers and the pipeline.
"""
from __future__ import annotations

import os
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

SMALL_SCMM = """
method: {model: {encoder: {width: 32}, projector_hidden: 64, projector_dim: 32}}
data: {batch_size: 16, validation_fraction: 0.5}
optim: {lr: 1.0e-3}
run: {log_every: 1}
"""
SMALL_PHYSIOSYNC = """
method: {long_dim: 32, short_dim: 16, depth: 1, heads: 2, projector: {hidden: [64], out_dim: 32}, head_dim: 32}
data: {batch_size: 8}
optim: {lr: 2.0e-3}
run: {log_every: 1}
"""


@pytest.fixture(scope="module")
def cluster(ray_local, tmp_path_factory):
    """(address of the session's Ray, environment with a private demo cache)."""
    cache = tmp_path_factory.mktemp("cache")
    return ray_local.get_runtime_context().gcs_address, {**os.environ, "PHYSIOFM_CACHE": str(cache)}


def run_job(cluster, script: str, *args: str) -> str:
    address, env = cluster
    proc = subprocess.run([sys.executable, f"jobs/{script}", "--address", address, "--num-workers", "2", *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def train_twice(cluster, tmp_path, script: str, config: str, steps: int, *flags: str) -> tuple[str, str, object]:
    """Run a job to global step `steps`, then again to `steps` + 4 (same output and name):
    (output 1, output 2, runs dir)."""
    (tmp_path / "small.yaml").write_text(config)
    out = tmp_path / "runs"
    common = [*flags, "--config", str(tmp_path / "small.yaml"), "--output", str(out), "--checkpoint-every", "4"]
    first = run_job(cluster, script, *common, "--max-steps", str(steps))
    return first, run_job(cluster, script, *common, "--max-steps", str(steps + 4)), out


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


def test_scmm_job_pretrains_on_demo_seed_for_deap_resumes_and_exports(cluster, tmp_path):
    first, second, out = train_twice(cluster, tmp_path, "pretrain_scmm.py", SMALL_SCMM, 8, "--source",
                                     "seed", "--target", "deap")
    assert "no --corpus given: using the embedded demo corpus" in first
    assert "preparing windows with preset 'scmm-de-deap32'" in first
    assert "validation: 1 groups by ['recording'] held out" in first and "validation loss" in first
    assert_falls_then_resumes(first, second, "scmm-seed-deap", 8)

    export = out / "scmm-seed-deap" / "step_00000012" / "export"
    stored = load(export / "encoder.pt")
    assert stored["config"] == {"n_channels": 32, "n_bands": 5, "width": 32}
    encoder = SCMMEncoder(SCMMEncoderConfig(**stored["config"]))
    encoder.load_state_dict(stored["state_dict"])
    fitted = load(export / "feature_scaling.pt")["config"]
    scaling = FeatureScaling(FeatureScalingConfig(**fitted))

    # the scaler the workers used is the fit on the training recording only
    corpus = os.path.join(cluster[1]["PHYSIOFM_CACHE"], "demo", "scmm-seed-deap", "windows")
    windows = read_windows(corpus, columns=["x", "recording"])
    held_out = choose_validation_groups(sorted(set(windows["recording"])), 0.5, seed=0)
    train = windows["x"][~np.isin(windows["recording"], sorted(held_out))]
    assert 0 < len(train) < len(windows["x"])
    np.testing.assert_array_equal(np.float32(fitted["minimum"]), train.reshape(len(train), -1).min(axis=0))
    np.testing.assert_array_equal(np.float32(fitted["maximum"]), train.reshape(len(train), -1).max(axis=0))
    with torch.no_grad():
        features = encoder.eval()(scaling(torch.from_numpy(train[:4])))
    assert features.shape == (4, encoder.config.feature_dim) and torch.isfinite(features).all()


def test_physiosync_job_pretrains_both_resolutions_on_demo_deap_resumes_and_exports(cluster, tmp_path):
    first, second, out = train_twice(cluster, tmp_path, "pretrain_physiosync.py", SMALL_PHYSIOSYNC, 16,
                                     "--dataset", "deap", "--resolution", "both")
    assert "physiosync train: 48 segments of all 4 subjects; 0 segments dropped" in first
    assert_falls_then_resumes(first, second, "physiosync-deap-both", 16)

    export = out / "physiosync-deap-both" / "step_00000020" / "export"
    expected = {"eeg_long": (32, 640), "peripheral_long": (1, 640), "eeg_short": (32, 128),
                "peripheral_short": (1, 128)}
    assert sorted(p.stem for p in export.glob("*.pt")) == sorted(expected)
    for name, (channels, samples) in expected.items():
        stored = load(export / f"{name}.pt")
        encoder = PhysioSyncEncoder(PhysioSyncEncoderConfig(**stored["config"]))
        encoder.load_state_dict(stored["state_dict"])
        assert (encoder.config.n_channels, encoder.config.n_samples) == (channels, samples)
        with torch.no_grad():
            features = encoder.eval()(torch.randn(2, channels, samples))
        assert features.shape == (2, encoder.config.out_dim) and torch.isfinite(features).all()
