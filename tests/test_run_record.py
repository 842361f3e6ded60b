"""The run record: a resume with settings its checkpoints cannot restore into is refused at start,
naming each differing setting; objective settings (ratios, temperatures) may change, and are logged."""
from __future__ import annotations

import pytest
import yaml

from physiofm.platform.config import ConfigError, TrainConfig
from physiofm.platform.run_record import RECORD_NAME, check_resume, write_record


def config(method=None, **sections) -> TrainConfig:
    data = {"method": {"name": "masked_reconstruction", **(method or {})}, "data": {"corpus": "x"}}
    for section, values in sections.items():
        data[section] = values
    return TrainConfig.from_dict(data)


def resume(tmp_path, first: TrainConfig, second: TrainConfig) -> list[str]:
    write_record(first, str(tmp_path))
    lines: list[str] = []
    check_resume(second, str(tmp_path), lines.append)
    return lines


def test_same_settings_resume_silently(tmp_path):
    cfg = config(run={"max_steps": 10})
    assert resume(tmp_path, cfg, config(run={"max_steps": 20}, optim={"lr": 1e-3})) == []
    record = yaml.safe_load((tmp_path / RECORD_NAME).read_text())
    assert record["checkpoint_settings"]["scaling.num_workers"] == 2
    assert record["checkpoint_settings"]["method.encoder.n_layer"] == 12
    assert record["config"]["run"]["max_steps"] == 10


def test_fewer_workers_on_a_partitioned_optimizer_state_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        resume(tmp_path, config(run={"zero_stage": 2}), config(run={"zero_stage": 2}, scaling={"num_workers": 1}))
    assert "scaling.num_workers: checkpoint 2, now 1" in str(err.value)
    assert "resume with --num-workers 2, or start a new run" in str(err.value)


def test_worker_count_may_change_under_zero_0(tmp_path):
    assert resume(tmp_path, config(run={"zero_stage": 0}),
                  config(run={"zero_stage": 0}, scaling={"num_workers": 4})) == []


@pytest.mark.parametrize("second,named", [
    (config({"encoder": {"n_layer": 6}}), "method.encoder.n_layer: checkpoint 12, now 6"),
    (config({"modality": "ecg"}), "method.modality: checkpoint 'eeg', now 'ecg'"),
    (config(run={"zero_stage": 3}), "run.zero_stage: checkpoint 2, now 3"),
    (config(run={"precision": "bf16"}), "run.precision: checkpoint 'fp32', now 'bf16'"),
])
def test_model_stage_and_precision_must_match(tmp_path, second, named):
    with pytest.raises(ConfigError, match="has checkpoints made with other settings") as err:
        resume(tmp_path, config(), second)
    assert named in str(err.value)


def test_objective_settings_may_change_and_are_logged(tmp_path):
    lines = resume(tmp_path, config({"inter_ratio": 0.0}), config({"inter_ratio": 0.3}))
    assert lines == ["resuming 'pretrain' with changed settings: method.inter_ratio: 0.0 -> 0.3"]


def test_other_methods_compare_their_own_fields(tmp_path):
    scmm = {"name": "scmm", "source": "seed", "target": "deap", "feature_min": (0.0, 1.0), "feature_max": (1.0, 2.0)}
    assert resume(tmp_path / "a", config(scmm), config(scmm)) == []  # tuples survive the YAML round trip
    with pytest.raises(ConfigError, match="method.source: checkpoint 'seed', now 'seed_iv'"):
        resume(tmp_path / "b", config(scmm), config({**scmm, "source": "seed_iv", "target": "seed"}))
    physiosync = {"name": "physiosync", "dataset": "deap"}
    with pytest.raises(ConfigError, match="method.variant: checkpoint 'dependent', now 'cross'"):
        resume(tmp_path / "c", config(physiosync), config({**physiosync, "variant": "cross"}))


def test_a_run_without_record_resumes_unchecked(tmp_path):
    check_resume(config(), str(tmp_path / "older-run"), print)  # no record: nothing to compare


def test_a_record_that_is_not_a_mapping_is_named(tmp_path):
    (tmp_path / RECORD_NAME).write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=f"{RECORD_NAME} is not a run record"):
        check_resume(config(), str(tmp_path), print)
