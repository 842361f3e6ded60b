"""The README's main command on a fresh directory, and EEG pretraining from the official weights."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from physiofm.encoders import CBraMod
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow


def losses(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"\[physiofm\] step \d+/\d+ loss=([0-9.]+)", output)]


def test_readme_main_command_trains_resumes_and_exports(tmp_path):
    """`python jobs/pretrain_ecg.py` on a fresh directory: two ZeRO-2 workers train the full ECG
    encoder, the masked loss falls, a checkpoint and the summary come out; the same command with a
    larger --max-steps resumes from that checkpoint where the loss left off."""
    env = {**os.environ, "PHYSIOFM_CACHE": str(tmp_path / "cache")}

    def main_command(*flags: str, exit_code: int = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "pretrain_ecg.py"), *flags], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == exit_code, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    first = main_command()
    out = first.stdout
    assert "no --corpus given: using the embedded demo corpus" in out
    for line in ("global_step=12", "started from scratch", "on 2 workers", "checkpoint   ", "tensorboard --logdir",
                 "resume "):
        assert line in out, line
    curve = losses(first.stdout + first.stderr)
    assert len(curve) == 6 and curve[-1] < 0.5 * curve[0], curve  # the masked loss falls
    run = tmp_path / "runs" / "ecg-dual-masking"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert CBraMod.from_pretrained(run / "step_00000012" / "export" / "encoder.pt").config.n_layer == 12

    # ZeRO-2 optimizer state is partitioned over 2 ranks: one worker cannot resume it, and the
    # driver says so before any worker starts (not a retry loop of failing workers)
    refused = main_command("--max-steps", "16", "--num-workers", "1", exit_code=2)
    assert "scaling.num_workers: checkpoint 2, now 1" in refused.stderr
    assert "resume with --num-workers 2" in refused.stderr and "RayTrainWorker" not in refused.stdout + refused.stderr

    second = main_command("--max-steps", "16")
    text = second.stdout + second.stderr
    assert "resuming from step_00000012" in text
    assert re.search(r"resumed from .*step_00000012 \(step 12\)", second.stdout)
    assert "global_step=16" in second.stdout
    resumed = losses(text)
    assert abs(resumed[0] - curve[-1]) < 0.5 * abs(curve[0] - curve[-1]), (curve, resumed)
    encoder = CBraMod.from_pretrained(run / "step_00000016" / "export" / "encoder.pt").eval()
    with torch.no_grad():
        assert torch.isfinite(encoder(torch.randn(1, 12, 10, 200))).all()


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
