"""The README's main command on a fresh machine (console, chain to embed, resume), and EEG
pretraining: the demo with no arguments, and a run from the official weights."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from physiofm.encoders import CBraMod
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow


def losses(output: str) -> list[float]:
    return [float(m) for m in re.findall(r"\[physiofm\] step \d+/\d+ loss=([0-9.]+)", output)]


# A line that reports at WARNING/ERROR level, in any of the formats Ray, its C++ core, DeepSpeed,
# Python's warnings and tracebacks print.
ALARM = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b|\[[\d\- :,.]+ [EWF] \d+ \d+\]|\b\w*(Warning|Error):"
                   r"|Traceback \(most recent call last\)")
ERROR = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b|\[[\d\- :,.]+ [EF] \d+ \d+\]|Traceback \(most recent call last\)")
# Lines of ours (a worker's carry Ray's "(RayTrainWorker pid=N)" prefix); ours never alarm on a good run
OURS = re.compile(r"^(\x1b\[\d+m)?(\(RayTrainWorker pid=\d+\)(\x1b\[0m)? )?"
                  r"(\[physiofm\]|\[prepare\]|\[embed\]|no --corpus given|starting a local Ray|connecting to the"
                  r" Ray cluster|\S+ holds raw recordings|\d+ workers on \d+ CPUs|\d+ worker\(s\) x |"
                  r"training \w+ on \d+ windows|=+$|physiofm run |  )")


# The tests' cluster hosts pytest's own driver and its workers beside a joined job on 2 CPUs: its raylet
# warns once when the node's worker count (both drivers') first reaches 4x its startup concurrency.
# A job on its own local Ray (the fresh-machine run above) is held to the strict check.
SHARED_NODE = re.compile(r"\(raylet\)(\x1b\[0m)? WARNING: \d+ PYTHON worker processes have been started on node")


def foreign_alarms(output: str) -> list[str]:
    """Lines of a run joined to the tests' cluster that alarm and are not ours."""
    return [line for line in output.splitlines()
            if ALARM.search(line) and not OURS.match(line) and not SHARED_NODE.search(line)]


def clean_machine(root) -> dict[str, str]:
    """A user's environment on a fresh machine: a new home (no ~/.ray token, no ~/.cache/physiofm),
    RAY_AUTH_MODE unset, no Ray or test settings; PYTHONPATH names this checkout."""
    (root / "home").mkdir()
    return {"PATH": os.environ["PATH"], "HOME": str(root / "home"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO_ROOT)}


def test_readme_main_command_trains_quietly_resumes_exports_and_names_the_next_command(tmp_path, job_env):
    """`python jobs/pretrain_ecg.py` on a fresh machine: two ZeRO-2 workers train the full ECG
    encoder on the demo corpus in ~/.cache/physiofm, the masked loss falls, a checkpoint comes out;
    nothing that is not ours is printed at WARNING/ERROR level and the summary box comes last,
    naming the embed command, which runs as printed. The same command with a larger --max-steps
    resumes where the loss left off (joined to the tests' cluster, as under `ray job submit`). The
    tests' own cluster is up meanwhile: a second Ray instance on the host, as in the finding."""
    home = clean_machine(tmp_path)
    joined = {**home, "RAY_ADDRESS": job_env["RAY_ADDRESS"], "RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]}

    def command(args: list[str], env: dict, exit_code: int = 0) -> str:
        proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=900)  # one stream, in order
        assert proc.returncode == exit_code, proc.stdout[-6000:]
        return proc.stdout

    out = command([str(REPO_ROOT / "jobs" / "pretrain_ecg.py")], home)
    lines = [line for line in out.splitlines() if line.strip()]
    alarms = [line for line in lines if ALARM.search(line) and not OURS.match(line)]
    assert not alarms, "\n".join(alarms)
    others = [line for line in lines if not OURS.match(line)]
    assert not others, "\n".join(others)  # one line per report, all ours
    box = lines.index("=" * 72)
    assert lines[-1] == "=" * 72 and lines[box + 1].startswith("physiofm run 'ecg-dual-masking' finished")
    assert all(not line.startswith("(") for line in lines[box:])  # nothing from a worker after the box
    cache = tmp_path / "home" / ".cache" / "physiofm" / "demo" / "ecg-dual-masking"
    assert f"no --corpus given: using the embedded demo corpus in {cache}" in out
    for line in ("global_step=12", "started from scratch", "on 2 workers", "checkpoint   ", "tensorboard --logdir",
                 "resume "):
        assert line in out, line
    curve = losses(out)
    assert len(curve) == 6 and curve[-1] < 0.5 * curve[0], curve  # the masked loss falls
    run = tmp_path / "runs" / "ecg-dual-masking"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    export = run / "step_00000012" / "export" / "encoder.pt"
    encoder = CBraMod.from_pretrained(export)
    assert encoder.config.n_layer == 12
    tensor_bytes = sum(t.numel() * 4 for t in encoder.state_dict().values())
    assert export.stat().st_size < 1.1 * tensor_bytes + 2**16, (export.stat().st_size, tensor_bytes)
    assert (tmp_path / "home" / ".ray" / "auth_token").is_file()  # Ray's default: token auth, quietly

    # the next command, copied from the box: it embeds every demo window with the exported encoder
    embed = next(line.split("next", 1)[1].strip() for line in lines[box:] if line.strip().startswith("next"))
    assert f"--encoder {export.relative_to(tmp_path)}" in embed and "--corpus" in embed
    embed_out = command(shlex.split(embed)[1:], joined)
    assert "physiofm embed: 48 windows" in embed_out and embed_out.rstrip().endswith("=" * 72)
    # no error from a restartable actor built through the object store (one per embedding actor, before);
    # Ray Data's 'no available CPUs' heuristic may still warn when the joined cluster is busy a moment
    assert not [line for line in embed_out.splitlines() if ERROR.search(line) and not OURS.match(line)], embed_out
    embedded = tmp_path / "runs" / "ecg-dual-masking-embeddings"
    assert len(pq.read_table(embedded / "embeddings")) == 48

    # ZeRO-2 optimizer state is partitioned over 2 ranks: one worker cannot resume it, and the
    # driver says so before any worker starts (not a retry loop of failing workers)
    main_command = [str(REPO_ROOT / "jobs" / "pretrain_ecg.py")]
    refused = command([*main_command, "--max-steps", "16", "--num-workers", "1"], home, exit_code=2)
    assert "scaling.num_workers: checkpoint 2, now 1" in refused and "--num-workers sets scaling.num_workers" in refused
    assert "resume with --num-workers 2" in refused and "RayTrainWorker" not in refused
    assert "starting a local Ray" not in refused  # the demo corpus is prepared already: no Ray to refuse

    second = command([*main_command, "--max-steps", "16"], joined)
    assert not foreign_alarms(second), second
    assert "resuming from step_00000012" in second
    assert re.search(r"resumed from .*step_00000012 \(step 12\)", second)
    assert "global_step=16" in second
    resumed = losses(second)
    assert abs(resumed[0] - curve[-1]) < 0.5 * abs(curve[0] - curve[-1]), (curve, resumed)
    encoder = CBraMod.from_pretrained(run / "step_00000016" / "export" / "encoder.pt").eval()
    with torch.no_grad():
        assert torch.isfinite(encoder(torch.randn(1, 12, 10, 200))).all()

    # embed with no arguments: the demo corpus and the demo run's last export, into the same
    # output as before (its earlier embeddings replaced, not appended to)
    again = command([str(REPO_ROOT / "jobs" / "embed.py")], joined)
    assert f"last export of the demo run, {Path('runs/ecg-dual-masking/step_00000016/export/encoder.pt')}" in again
    assert len(pq.read_table(embedded / "embeddings")) == 48


def test_eeg_job_runs_its_demo_and_starts_from_official_weights(tmp_path, job_env):
    """`python jobs/pretrain_eeg.py` with no arguments trains the full CBraMod on its TUEG-like demo
    corpus; then, on the same (already prepared) corpus, a run from the official weights at a
    negligible learning rate exports exactly those weights after one step."""
    def job(*args: str) -> str:
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "pretrain_eeg.py"), *args], cwd=tmp_path,
                              env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-6000:]
        return proc.stdout

    demo = job()
    assert "no --corpus given: using the embedded demo corpus" in demo and "global_step=8" in demo
    export = tmp_path / "runs" / "cbramod-eeg" / "step_00000008" / "export" / "encoder.pt"
    assert CBraMod.from_pretrained(export).config.n_layer == 12
    assert "next         python" in demo and f"--encoder {export.relative_to(tmp_path)}" in demo

    weights = shared_path("fixtures", "cbramod", "cbramod_random_init_seed0_state_dict.pth")
    config = tmp_path / "tiny-lr.yaml"  # one step at a negligible learning rate: the export must be the input
    config.write_text("optim:\n  lr: 1.0e-12\n  min_lr: 0.0\n  warmup_steps: 0\n  weight_decay: 0.0\n")
    out = job("--init-from", str(weights), "--max-steps", "1", "--checkpoint-every", "1",
              "--output", str(tmp_path / "official"), "--config", str(config))
    assert f"initialised from {weights}" in out
    exported = CBraMod.from_pretrained(tmp_path / "official" / "cbramod-eeg" / "step_00000001" / "export" / "encoder.pt")
    official = torch.load(weights, weights_only=True)
    for name, tensor in exported.state_dict().items():
        torch.testing.assert_close(tensor, official[name], atol=1e-6, rtol=0, msg=name)
