"""Run configs: every bad value fails at start, naming the field and what is allowed."""
from __future__ import annotations

import subprocess
import sys

import pytest

from physiofm.platform.config import ConfigError, TrainConfig
from physiofm.platform.train_loop import deepspeed_config, deepspeed_template, warmup_cosine
from tests.conftest import REPO_ROOT, run_job_main

BASE = {"method": {"name": "masked_reconstruction"}, "data": {"corpus": "somewhere"}}


def with_(section: str, **values):
    cfg = {k: dict(v) for k, v in BASE.items()}
    cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.mark.parametrize("config,message", [
    (with_("run", zero_stage=4), r"run.zero_stage must be one of 0, 1, 2, 3 .* got 4"),
    (with_("method", intra_ratio=-0.1), r"method.intra_ratio must be in \[0, 1\) .* got -0.1"),
    (with_("method", inter_ratio=1.0), r"method.inter_ratio must be in \[0, 1\) .* got 1.0"),
    (with_("method", name="bert"), r"method.name must be one of \['masked_reconstruction'.*got 'bert'"),
    (with_("optim", lr=-1), r"optim.lr must be > 0, got -1"),
    (with_("optim", learning_rate=1e-3), r"unknown config key optim.learning_rate; allowed keys of optim: \[.*'lr'"),
    ({**BASE, "trainer": {}}, r"unknown config key trainer; allowed keys: \['data', 'method', 'optim', 'run', 'scaling'\]"),
    (with_("method", encoder={"n_layers": 3}), r"unknown config key method.encoder.n_layers; .*'n_layer'"),
    (with_("method", encoder={"nhead": 3}), r"method.encoder: CBraModConfig: d_model=200 and nhead=3"),
    (with_("run", precision="fp16"), r"run.precision must be one of \['auto', 'fp32', 'bf16'\], got 'fp16'"),
    (with_("scaling", num_workers=0), r"scaling.num_workers must be > 0, got 0"),
    (with_("data", batch_size=2.5), r"data.batch_size must be an integer, got 2.5"),
    (with_("scaling", use_gpu="yes"), r"scaling.use_gpu must be true or false, got 'yes'"),
    (with_("run", name="a/b"), r"run.name must be one folder name: .*got 'a/b'"),
    (with_("run", name=".."), r"run.name must be one folder name: .*got '\.\.'"),
    (with_("run", name="."), r"run.name must be one folder name: .*got '\.'"),
    (with_("run", name="-x"), r"run.name must be one folder name: .*got '-x'"),
    (with_("run", name="a\\b"), r"run.name must be one folder name"),
    (with_("run", name=""), r"run.name must be one folder name"),
])
def test_bad_values_are_named(config, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(config)


def test_round_trip_through_the_worker_dict():
    cfg = TrainConfig.from_dict(with_("method", inter_ratio=0.25, encoder={"n_layer": 2}))
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert again.method.encoder.n_layer == 2 and again.method.inter_ratio == 0.25


def test_yaml_file_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method:\n  name: masked_reconstruction\n  inter_ratio: 0.3\nrun:\n  zero_stage: 3\n"
                    "data:\n  corpus: x\n")
    cfg = TrainConfig.from_yaml(path, {"run": {"zero_stage": 1, "name": None}})
    assert cfg.run.zero_stage == 1 and cfg.method.inter_ratio == 0.3 and cfg.run.name == "pretrain"


def test_deepspeed_config_from_the_infra_templates():
    cfg = TrainConfig.from_dict(with_("run", zero_stage=3))
    ds = deepspeed_config(cfg, deepspeed_template(3), use_gpu=False)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"] == {"enabled": False}
    assert ds["train_micro_batch_size_per_gpu"] == cfg.data.batch_size
    assert deepspeed_config(cfg, deepspeed_template(3), use_gpu=True)["bf16"] == {"enabled": True}
    for stage in range(4):
        assert deepspeed_template(stage)["zero_optimization"]["stage"] == stage


def test_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig.from_dict(with_("optim", lr=1e-3, min_lr=1e-5, warmup_steps=10))
    factor = warmup_cosine(cfg.optim, total_steps=110)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.5 * (1 + 0.01), rel=1e-6)
    assert factor(110) == pytest.approx(0.01)
    assert factor(500) == pytest.approx(0.01)


@pytest.mark.parametrize("flags,message", [
    (["--zero-stage", "4"], "run.zero_stage must be one of 0, 1, 2, 3"),
    (["--inter-ratio", "1.2"], "method.inter_ratio must be in [0, 1)"),
    (["--intra-ratio", "-0.5"], "method.intra_ratio must be in [0, 1)"),
])
def test_job_rejects_bad_flags_before_starting_anything(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.setenv("PHYSIOFM_CACHE", str(tmp_path / "cache"))
    code, out, err = run_job_main("pretrain_ecg.py", ["--output", str(tmp_path / "runs"), *flags], capsys)
    assert code == 2, out + err
    assert message in err
    assert "Ray" not in out and not any(tmp_path.iterdir())  # nothing started, nothing written


def test_the_command_line_exits_with_the_code_and_message_of_a_bad_flag(tmp_path):
    """Once as a real process: the exit status and stderr a shell sees."""
    proc = subprocess.run([sys.executable, "jobs/pretrain_ecg.py", "--output", str(tmp_path), "--zero-stage", "4"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "run.zero_stage must be one of 0, 1, 2, 3" in proc.stderr and not any(tmp_path.iterdir())


def test_job_help_explains_each_flag(capsys):
    code, out, _ = run_job_main("pretrain_ecg.py", ["--help"], capsys)
    assert code == 0
    for flag in ("--corpus", "--output", "--name", "--num-workers", "--use-gpu", "--zero-stage",
                 "--max-steps", "--batch-size", "--intra-ratio", "--inter-ratio", "--config"):
        assert flag in out


def test_a_jobs_own_local_ray_polls_its_training_workers_faster_than_rays_default(monkeypatch):
    """Ray Train's controller sees the last report and the workers' exit one poll late each: on a job's
    own local Ray the poll is 0.5 s, not Ray's 2 s (about 3 s off the end of every run); a value the
    user set is kept."""
    from ray.train.v2._internal.constants import DEFAULT_HEALTH_CHECK_INTERVAL_S, HEALTH_CHECK_INTERVAL_S_ENV_VAR

    from physiofm.platform.console import local_ray_environment

    monkeypatch.delenv(HEALTH_CHECK_INTERVAL_S_ENV_VAR, raising=False)
    assert float(local_ray_environment()[HEALTH_CHECK_INTERVAL_S_ENV_VAR]) == 0.5 < DEFAULT_HEALTH_CHECK_INTERVAL_S
    monkeypatch.setenv(HEALTH_CHECK_INTERVAL_S_ENV_VAR, "3")
    assert local_ray_environment()[HEALTH_CHECK_INTERVAL_S_ENV_VAR] == "3"
