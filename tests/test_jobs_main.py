"""The README's main command on a fresh directory, and EEG pretraining from the official weights."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from physiofm.encoders import CBraMod
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow


def test_readme_main_command_ends_with_a_checkpoint_and_the_summary(tmp_path):
    env = {**os.environ, "PHYSIOFM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "pretrain_ecg.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "no --corpus given: using the embedded demo corpus" in out
    for line in ("global_step=12", "started from scratch", "checkpoint   ", "tensorboard --logdir", "resume"):
        assert line in out, line
    checkpoint = tmp_path / "runs" / "ecg-dual-masking" / "step_00000012"
    encoder = CBraMod.from_pretrained(checkpoint / "export" / "encoder.pt")
    assert encoder.config.n_layer == 12  # the full symmetric encoder, not a toy


def test_eeg_job_starts_from_official_weights(tmp_path):
    weights = shared_path("fixtures", "cbramod", "cbramod_random_init_seed0_state_dict.pth")
    config = tmp_path / "tiny-lr.yaml"  # one step at a negligible learning rate: the export must be the input
    config.write_text("optim:\n  lr: 1.0e-12\n  min_lr: 0.0\n  warmup_steps: 0\n  weight_decay: 0.0\n")
    env = {**os.environ, "PHYSIOFM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "jobs/pretrain_eeg.py", "--init-from", str(weights), "--max-steps", "1",
                           "--checkpoint-every", "1", "--output", str(tmp_path / "runs"), "--config", str(config)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"initialised from {weights}" in proc.stdout + proc.stderr
    exported = CBraMod.from_pretrained(tmp_path / "runs" / "cbramod-eeg" / "step_00000001" / "export" / "encoder.pt")
    official = torch.load(weights, weights_only=True)
    for name, tensor in exported.state_dict().items():
        torch.testing.assert_close(tensor, official[name], atol=1e-6, rtol=0, msg=name)
