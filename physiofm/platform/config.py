"""Typed configuration of a pretraining run, validated before any worker starts.

A run is `TrainConfig` = method (what to train) + data + optim + scaling + run. It comes from a
YAML file (`--config`), overridden by command-line flags, and travels to every worker as the plain
dict `train_loop_config`. Every field is checked here; an error names the field (`optim.lr`), the
bad value, and what is allowed.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml



class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


@dataclass
class MethodConfig:
    """Base of each method's config (`physiofm.platform.methods`): what to build and train.

    Driver-side hooks, all run before any worker starts: `check_corpus` (window shapes),
    `prepare_datasets` (select the streamed columns; a method may also fit statistics on the
    training side only, or regroup rows). Worker side: `build` makes the objective.
    """

    name: typing.ClassVar[str] = ""
    #: metadata columns `prepare_datasets` needs besides the streamed ones (e.g. subject, trial)
    grouping_columns: typing.ClassVar[tuple[str, ...]] = ()
    #: `data.validation_by` when the config does not set it (a method may need whole trials apart)
    validation_by: typing.ClassVar[tuple[str, ...]] = ("recording",)
    #: fields a resumed run may change (objective settings such as ratios and temperatures); every
    #: other method field must equal the checkpoint's (`physiofm.platform.run_record`)
    resume_may_change: typing.ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        pass

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(required, optional) corpus columns streamed to the objective."""
        raise NotImplementedError

    @property
    def default_preset(self) -> str:
        raise NotImplementedError

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        pass

    def prepare_datasets(self, datasets: dict[str, Any], streamed: list[str]) -> dict[str, Any]:
        """Ray Datasets by name ("train", maybe "validation") -> what the workers stream."""
        return {name: ds.select_columns(streamed) for name, ds in datasets.items()}

    def build(self, seed: int = 0, initial_weights: Any = None):
        raise NotImplementedError


@dataclass
class DataConfig:
    corpus: str = ""  # prepared windows URI (has corpus.json) or raw recordings to prepare first
    batch_size: int = 16  # per worker, per micro-step
    shuffle_buffer: int = 256  # local shuffle buffer of each worker's stream (0 = no shuffling)
    prefetch_batches: int = 2
    preset: str = ""  # preprocessing preset for a raw corpus ("" = the method's default)
    prepared_cache: str = ""  # where a raw corpus is prepared ("" = beside the run's output)
    validation_fraction: float = 0.0  # share of groups held out; validation loss at every checkpoint
    validation_by: tuple[str, ...] = ("recording",)  # a group never straddles the split (e.g. trial)
    # A corpus whose streamed columns fit in this many MiB (and in a quarter of Ray's object store) is
    # read once and every epoch streams from the object store: no re-read, no restart of the stream
    # at each epoch. 0 = always stream from storage.
    in_memory_mb: float = 1024.0

    def validate(self) -> None:
        _positive("data.batch_size", self.batch_size)
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        from physiofm.data.corpus import METADATA_COLUMNS

        unknown = [c for c in self.validation_by if c not in METADATA_COLUMNS]
        if not self.validation_by or unknown:
            raise ConfigError(f"data.validation_by must name metadata columns among {list(METADATA_COLUMNS)}, "
                              f"got {list(self.validation_by)}")
        _non_negative("data.shuffle_buffer", self.shuffle_buffer)
        _non_negative("data.prefetch_batches", self.prefetch_batches)
        _non_negative("data.in_memory_mb", self.in_memory_mb)


@dataclass
class OptimConfig:
    lr: float = 5e-4
    min_lr: float = 1e-5  # end of the cosine schedule
    weight_decay: float = 5e-2
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    grad_clip: float = 1.0  # 0 disables clipping
    grad_accum: int = 1

    def validate(self) -> None:
        _positive("optim.lr", self.lr)
        _non_negative("optim.min_lr", self.min_lr)
        if self.min_lr > self.lr:
            raise ConfigError(f"optim.min_lr={self.min_lr} must not exceed optim.lr={self.lr}")
        _non_negative("optim.weight_decay", self.weight_decay)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two values in [0, 1), got {list(self.betas)}")
        _non_negative("optim.warmup_steps", self.warmup_steps)
        _non_negative("optim.grad_clip", self.grad_clip)
        _positive("optim.grad_accum", self.grad_accum)


@dataclass
class ScalingConfig:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.0  # 0 = auto: 1, or less where that would leave no CPU for Ray Data
    gpus_per_worker: float = 1.0  # used when use_gpu
    resources_per_worker: dict[str, float] = field(default_factory=dict)  # named accelerators, custom resources
    memory_per_worker_gib: float = 0.0  # Ray's `memory` resource per worker; 0 = none asked
    scale_up_timeout_s: float = 600.0  # how long a job waits for the autoscaler to add its workers' nodes

    def validate(self) -> None:
        _positive("scaling.num_workers", self.num_workers)
        _non_negative("scaling.cpus_per_worker", self.cpus_per_worker)
        _positive("scaling.gpus_per_worker", self.gpus_per_worker)
        _non_negative("scaling.memory_per_worker_gib", self.memory_per_worker_gib)
        _positive("scaling.scale_up_timeout_s", self.scale_up_timeout_s)
        own = {"CPU": "scaling.cpus_per_worker", "GPU": "scaling.use_gpu / scaling.gpus_per_worker",
               "memory": "scaling.memory_per_worker_gib"}
        for name, amount in self.resources_per_worker.items():
            if name in own:
                raise ConfigError(f"scaling.resources_per_worker: {name!r} is set by {own[name]}, not as a named resource")
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
                raise ConfigError(f"scaling.resources_per_worker: {name}={amount!r} must be a positive number")


@dataclass
class RunConfig:
    name: str = "pretrain"
    storage: str = "runs"  # local directory or s3://bucket/prefix: checkpoints, TensorBoard, exports
    max_steps: int = 100  # optimizer steps in total, counting those of resumed runs
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    max_failures: int = 2  # worker-group restarts from the last checkpoint before the run fails
    log_every: int = 10
    zero_stage: int = 2
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    seed: int = 0

    def validate(self) -> None:
        check_name("run.name", self.name)
        if not self.storage:
            raise ConfigError("run.storage must be a local directory or an s3:// URI, got ''")
        _positive("run.max_steps", self.max_steps)
        _positive("run.checkpoint_every", self.checkpoint_every)
        _positive("run.keep_checkpoints", self.keep_checkpoints)
        _non_negative("run.max_failures", self.max_failures)
        _positive("run.log_every", self.log_every)
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"run.zero_stage must be one of 0, 1, 2, 3 (DeepSpeed ZeRO stages), "
                              f"got {self.zero_stage!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"run.precision must be one of 'auto', 'fp32', 'bf16', got {self.precision!r}")


@dataclass
class TrainConfig:
    method: MethodConfig
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "TrainConfig":
        for part in (self.method, self.data, self.optim, self.scaling, self.run):
            part.validate()
        return self

    def resolved_precision(self, use_gpu: bool | None = None) -> str:
        """run.precision with 'auto' resolved: bf16 on GPU, fp32 on CPU (`use_gpu` defaults to scaling's)."""
        if self.run.precision != "auto":
            return self.run.precision
        return "bf16" if (self.scaling.use_gpu if use_gpu is None else use_gpu) else "fp32"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["method"] = {"name": self.method.name, **out["method"]}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        from physiofm.platform.methods import METHODS

        data = dict(data)
        _reject_unknown("", data, {f.name for f in dataclasses.fields(cls)})
        method = dict(data.pop("method", None) or {})
        name = method.pop("name", None)
        if name not in METHODS:
            raise ConfigError(f"method.name must be one of {sorted(METHODS)}, got {name!r}")
        parts = {"method": build_dataclass(METHODS[name], method, "method")}
        if isinstance(data.get("data") or {}, Mapping):
            data["data"] = {"validation_by": METHODS[name].validation_by, **(data.get("data") or {})}
        for f in dataclasses.fields(cls):
            if f.name != "method" and f.name in data:
                parts[f.name] = build_dataclass(_resolve(cls, f.name), data[f.name] or {}, f.name)
        return cls(**parts).validate()

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        text = Path(path).read_text()
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping of sections, got {type(data).__name__}")
        return cls.from_dict(merge(data, overrides or {}))


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: values of `overrides` win; None in `overrides` means 'not given'."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out[key] = merge(out[key] if isinstance(out.get(key), Mapping) else {}, value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- dataclass building
def build_dataclass(cls: type, data: Mapping[str, Any], path: str) -> Any:
    """Instantiate `cls` from a mapping, recursing into dataclass fields; unknown keys are errors."""
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must be a mapping of {cls.__name__} fields, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    _reject_unknown(path, data, set(fields))
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(_resolve(cls, key), value, f"{path}.{key}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path}: {err}") from err


def _resolve(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(options[0], value, path) if len(options) == 1 else value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{path} must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    return value


def _reject_unknown(path: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!s}; allowed keys"
                          f"{' of ' + path if path else ''}: {sorted(allowed)}")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(field: str, name: str) -> None:
    """A name that becomes a folder: one path segment (letters, digits, '.', '_', '-'; not '.' or
    '..', nothing that starts with a dot or a dash), at most 128 characters."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise ConfigError(f"{field} must be one folder name: letters, digits, '.', '_' or '-', starting with a letter "
                          f"or digit, at most 128 characters (no '/', '..', spaces); got {name!r}")


def _positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value!r}")
