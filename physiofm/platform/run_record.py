"""The settings a run's checkpoints depend on, recorded beside them and checked on every resume.

A DeepSpeed checkpoint restores only into the same model, ZeRO stage and precision, and with
ZeRO >= 1 only on the same number of workers (the optimizer state is partitioned per rank).
Without this check a mismatched resume fails inside every worker, and Ray Train retries it up to
`run.max_failures` times; with it the driver refuses at start and names what differs.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import yaml

from physiofm.data import storage
from physiofm.platform.config import ConfigError, TrainConfig

RECORD_NAME = "physiofm-run.yaml"


def checkpoint_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What must agree between a checkpoint and the run that resumes from it (dotted keys)."""
    method = cfg.to_dict()["method"]
    settings = {f"method.{key}": value for key, value in _flatten(method).items()
                if key.split(".")[0] not in cfg.method.resume_may_change}
    settings["run.zero_stage"] = cfg.run.zero_stage
    settings["run.precision"] = cfg.resolved_precision()
    if cfg.run.zero_stage >= 1:
        settings["scaling.num_workers"] = cfg.scaling.num_workers
    return settings


def check_resume(cfg: TrainConfig, run_uri: str, log: Callable[[str], None] = print) -> None:
    """Raise ConfigError when the recorded settings of `run_uri` differ from `cfg`'s; log the
    settings that may change on a resume (ratios, temperatures) when they did."""
    recorded = read_record(run_uri)
    if recorded is None:
        return
    current_method = _flatten(cfg.to_dict()["method"])
    old_method = _flatten(recorded.get("config", {}).get("method", {}))
    changed = [f"method.{key}: {old_method.get(key)!r} -> {value!r}" for key, value in current_method.items()
               if key.split(".")[0] in cfg.method.resume_may_change and key in old_method
               and old_method[key] != value]
    if changed:
        log(f"resuming '{cfg.run.name}' with changed settings: {'; '.join(changed)}")

    old, new = recorded.get("checkpoint_settings", {}), checkpoint_settings(cfg)
    differ = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if not differ:
        return
    lines = "\n".join(f"  {key}: checkpoint {old.get(key, '(unset)')!r}, now {new.get(key, '(unset)')!r}"
                      for key in differ)
    flags = [f"--num-workers {old['scaling.num_workers']}" for key in differ if key == "scaling.num_workers"]
    flags += [f"--zero-stage {old['run.zero_stage']}" for key in differ if key == "run.zero_stage"]
    hint = f"resume with {' '.join(flags)}, or " if len(flags) == len(differ) else ""
    raise ConfigError(
        f"run '{cfg.run.name}' in {run_uri} has checkpoints made with other settings, which they cannot "
        f"restore into:\n{lines}\n{hint}start a new run under another --name (or --output).")


def write_record(cfg: TrainConfig, run_uri: str) -> None:
    record = {"config": cfg.to_dict(), "checkpoint_settings": checkpoint_settings(cfg)}
    fs, path = storage.fsspec_filesystem(run_uri)
    fs.makedirs(path, exist_ok=True)
    with fs.open(f"{path}/{RECORD_NAME}", "w") as handle:
        yaml.safe_dump(_plain(record), handle, sort_keys=False)


def read_record(run_uri: str) -> Mapping[str, Any] | None:
    fs, path = storage.fsspec_filesystem(run_uri)
    if not fs.exists(f"{path}/{RECORD_NAME}"):
        return None
    with fs.open(f"{path}/{RECORD_NAME}", "r") as handle:
        record = yaml.safe_load(handle)
    if not isinstance(record, dict):
        raise ConfigError(f"{run_uri}/{RECORD_NAME} is not a run record (a mapping); remove it to resume anyway")
    return record


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = _plain(value)
    return flat


def _plain(value: Any) -> Any:
    """YAML-safe and comparable after a round trip: tuples become lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
