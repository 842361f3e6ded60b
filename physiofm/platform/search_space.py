"""Search spaces of emotion sweeps (`jobs/tune_emotion.py`): a YAML file, checked before any trial starts.

    description: fusion heads and ECG masking ratios on DREAMER
    finetune: {dataset: dreamer, protocol: subject-dependent, label: valence, epochs: 12, freeze: true}
    pretraining: {ecg: {max_steps: 12, batch_size: 4, num_workers: 1}}
    parameters:
      head: {choice: [concat, late]}        # a categorical
      hidden: {int: [32, 256]}              # integers, both ends included
      dropout: {uniform: [0.0, 0.5]}
      lr: {loguniform: [3.0e-4, 1.0e-2]}
      ecg.intra_ratio: {uniform: [0.3, 0.7]}
      ecg.inter_ratio: 0.25                 # a fixed value
    asha: {grace_period: 2, reduction_factor: 2}

`finetune` holds fixed `FinetuneConfig` fields (the job's flags override them); `parameters` the
searched ones (`PARAMETERS`), fine-tuning ones by name and a pretraining method's as `METHOD.NAME`.
A parameter of a pretraining method (`PRETRAININGS`) makes every trial pretrain that encoder
briefly with the trial's values (the method's own job, `pretraining.METHOD` its short-run
settings), then fine-tune it. Every error names the parameter or key and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from physiofm.platform.config import ConfigError, build_dataclass

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
TOP_LEVEL = ("description", "finetune", "pretraining", "parameters", "asha")
#: FinetuneConfig fields a sweep sets itself (per trial, or for its final test run)
SWEEP_OWNED = ("output", "fold_indices", "evaluate_test", "save_models", "command", "cpus_per_fold", "gpus_per_fold",
               "shuffle_labels")


class SearchSpaceError(ConfigError):
    """The search space file is invalid; the message names the parameter or key and what is allowed."""


@dataclass(frozen=True)
class Parameter:
    """A searchable setting: its kind fixes what values are allowed."""

    name: str
    kind: str  # "ratio" [0, 1), "positive" (> 0), "non-negative" (>= 0), "int" (>= minimum), "choice"
    description: str
    target: str  # the FinetuneConfig field, or the pretraining method config's field
    options: tuple[Any, ...] = ()
    minimum: int = 1

    @property
    def group(self) -> str:
        """The pretraining method it belongs to ("" = fine-tuning)."""
        return self.name.split(".", 1)[0] if "." in self.name else ""

    def allowed(self) -> str:
        return {"ratio": "values in [0, 1)", "positive": "values > 0", "non-negative": "values >= 0",
                "int": f"integers >= {self.minimum}", "choice": f"one of {list(self.options)}"}[self.kind]


@dataclass(frozen=True)
class Pretraining:
    """A pretraining method a trial can run briefly with its values, through the method's job."""

    name: str
    job: str  # jobs/<job>.py
    modalities: tuple[str, ...]  # the fine-tuning modalities its encoders take
    family: str  # the fine-tuning encoder family of its exports
    export: str  # the export file the fine-tuning reads ("" = the export folder)
    preset: str  # the corpus preparation its windows need
    settings: tuple[str, ...] = ()  # method-specific settings beside the common ones (job flags)
    whole: bool = False  # its encoder takes every modality and its own windows (SCMM, PhysioSync)


PRETRAININGS: dict[str, Pretraining] = {p.name: p for p in (
    Pretraining("ecg", "pretrain_ecg", ("ecg",), "ecg", "encoder.pt", "ecg"),
    Pretraining("cbramod", "pretrain_eeg", ("eeg",), "cbramod", "encoder.pt", "cbramod-eeg", ("init_from",)),
    Pretraining("scmm", "pretrain_scmm", ("eeg",), "scmm", "encoder.pt", "", ("source", "target"), whole=True),
    Pretraining("physiosync", "pretrain_physiosync", ("eeg", "ecg", "peripheral"), "physiosync", "", "physiosync",
                ("dataset", "resolution"), whole=True),
)}
#: short-run settings of every pretraining method (`pretraining.METHOD.KEY`), as its job's flags
COMMON_SETTINGS = {"max_steps": "--max-steps", "batch_size": "--batch-size", "num_workers": "--num-workers",
                   "cpus_per_worker": "--cpus-per-worker", "lr": "--lr", "warmup_steps": "--warmup-steps",
                   "zero_stage": "--zero-stage", "corpus": "--corpus", "init_from": "--init-from",
                   "source": "--source", "target": "--target", "dataset": "--dataset", "resolution": "--resolution"}
PRETRAINING_DEFAULTS = {"max_steps": 12, "batch_size": 4, "num_workers": 1, "corpus": ""}

PARAMETERS: dict[str, Parameter] = {p.name: p for p in (
    Parameter("head", "choice", "fusion head", "head", options=("concat", "gated", "late", "scmm")),
    Parameter("pooling", "choice", "patch encoders' embedding", "pooling", options=("mean", "flatten")),
    Parameter("hidden", "int", "hidden width of the MLP head (one layer)", "hidden_dims"),
    Parameter("dropout", "ratio", "dropout of the head", "dropout"),
    Parameter("lr", "positive", "head learning rate", "lr"),
    Parameter("backbone_lr", "positive", "learning rate of trained encoders", "backbone_lr"),
    Parameter("weight_decay", "non-negative", "AdamW weight decay", "weight_decay"),
    Parameter("label_smoothing", "ratio", "label smoothing", "label_smoothing"),
    Parameter("batch_size", "int", "fine-tuning batch size", "batch_size", minimum=2),
    Parameter("ecg.intra_ratio", "ratio", "ECG dual masking: probability of masking each (lead, patch)", "intra_ratio"),
    Parameter("ecg.inter_ratio", "ratio", "ECG dual masking: probability of masking each whole lead", "inter_ratio"),
    Parameter("cbramod.mask_ratio", "ratio", "CBraMod: probability of masking each patch", "intra_ratio"),
    Parameter("scmm.mask_ratio", "ratio", "SCMM hybrid masking ratio", "mask_ratio"),
    Parameter("scmm.alpha", "positive", "SCMM: upper bound of the soft negative weights", "alpha"),
    Parameter("scmm.sharpness", "positive", "SCMM: sharpness s of the soft weights", "sharpness"),
    Parameter("scmm.tau", "positive", "SCMM: temperature of the contrastive loss and the aggregator", "tau"),
    Parameter("physiosync.tau", "positive", "PhysioSync: temperature of LS-TCL and CM-CA", "tau"),
)}


@dataclass(frozen=True)
class Spec:
    """One parameter's distribution (or fixed value)."""

    parameter: Parameter
    distribution: str  # one of DISTRIBUTIONS, or "fixed"
    values: tuple[Any, ...]  # (low, high), the choices, or (value,)

    @property
    def searched(self) -> bool:
        return self.distribution != "fixed" and not (self.distribution == "choice" and len(self.values) == 1)

    def tune_domain(self):
        from ray import tune

        if self.distribution == "uniform":
            return tune.uniform(*self.values)
        if self.distribution == "loguniform":
            return tune.loguniform(*self.values)
        if self.distribution == "int":
            return tune.randint(self.values[0], self.values[1] + 1)  # randint excludes its upper end
        if self.distribution == "choice":
            return tune.choice(list(self.values))
        return self.values[0]

    def describe(self) -> str:
        if self.distribution == "fixed":
            return f"{self.values[0]!r} (fixed)"
        if self.distribution == "choice":
            return "choice " + ", ".join(map(str, self.values))
        return f"{self.distribution} [{self.values[0]:g}, {self.values[1]:g}]"


@dataclass
class SearchSpace:
    source: str
    description: str
    finetune: dict[str, Any]
    pretraining: dict[str, dict[str, Any]]
    parameters: dict[str, Spec]
    asha: dict[str, int] = field(default_factory=dict)

    @property
    def searched(self) -> list[str]:
        return [name for name, spec in self.parameters.items() if spec.searched]

    @property
    def groups(self) -> list[str]:
        """The pretraining methods every trial runs (in PRETRAININGS order)."""
        named = {spec.parameter.group for spec in self.parameters.values()} | set(self.pretraining)
        return [g for g in PRETRAININGS if g in named]

    def tune_param_space(self) -> dict[str, Any]:
        return {name: spec.tune_domain() for name, spec in self.parameters.items()}

    def pretraining_settings(self, group: str) -> dict[str, Any]:
        return {**PRETRAINING_DEFAULTS, **self.pretraining.get(group, {})}

    def split(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """A trial's values -> (FinetuneConfig fields, {pretraining method: its method config fields})."""
        finetune: dict[str, Any] = {}
        methods: dict[str, dict[str, Any]] = {g: {} for g in self.groups}
        for name, value in params.items():
            parameter = PARAMETERS[name]
            if parameter.group:
                methods[parameter.group][parameter.target] = value
            elif parameter.target == "hidden_dims":
                finetune["hidden_dims"] = (int(value),)
            else:
                finetune[parameter.target] = int(value) if parameter.kind == "int" else value
        return finetune, methods


def load(path: str | Path) -> SearchSpace:
    """Read and check a search-space file (every error names the file, the parameter and what is allowed)."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"--search-space {str(path)!r}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{path}: not valid YAML ({err})") from err
    return parse(data, str(path))


def parse(data: Any, source: str = "<search space>") -> SearchSpace:
    def fail(message: str) -> None:
        raise SearchSpaceError(f"search space {source}: {message}")

    if not isinstance(data, Mapping):
        fail(f"must be a mapping with keys among {list(TOP_LEVEL)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        fail(f"unknown key {unknown[0]!r}; allowed keys: {list(TOP_LEVEL)}")
    finetune = _finetune_section(data.get("finetune") or {}, fail)
    parameters_in = data.get("parameters") or {}
    if not isinstance(parameters_in, Mapping) or not parameters_in:
        fail(f"'parameters' must map parameter names to distributions; allowed parameters: {sorted(PARAMETERS)}")
    parameters = {str(name): _spec(str(name), value, fail) for name, value in parameters_in.items()}
    pretraining = _pretraining_section(data.get("pretraining") or {}, fail)
    asha = _asha_section(data.get("asha") or {}, fail)
    space = SearchSpace(source, str(data.get("description") or ""), finetune, pretraining, parameters, asha)
    whole = [g for g in space.groups if PRETRAININGS[g].whole]
    if whole and len(space.groups) > 1:
        fail(f"pretraining methods {space.groups} cannot share a trial: {whole[0]} encodes every modality with its "
             "own windows; combine only ecg and cbramod (EEG ⊕ ECG)")
    if not space.searched:
        fail(f"no parameter is searched (every one is fixed); give at least one distribution among "
             f"{list(DISTRIBUTIONS)}")
    return space


def _finetune_section(section: Any, fail) -> dict[str, Any]:
    from physiofm.platform.finetune import FinetuneConfig

    if not isinstance(section, Mapping):
        fail(f"'finetune' must be a mapping of fine-tuning settings, got {section!r}")
    owned = sorted(set(section) & set(SWEEP_OWNED))
    if owned:
        fail(f"finetune.{owned[0]} is set by the sweep itself (per trial); leave it out")
    try:
        config = build_dataclass(FinetuneConfig, dict(section), "finetune")
    except ConfigError as err:
        fail(str(err))
    return {k: getattr(config, k) for k in section}


def _spec(name: str, value: Any, fail) -> Spec:
    parameter = PARAMETERS.get(name)
    if parameter is None:
        fail(f"unknown parameter {name!r}; allowed parameters: {sorted(PARAMETERS)}")
    where = f"parameter {name!r} ({parameter.description})"
    if not isinstance(value, Mapping):
        _check_value(parameter, value, where, fail)
        return Spec(parameter, "fixed", (value,))
    if len(value) != 1 or next(iter(value)) not in DISTRIBUTIONS:
        fail(f"{where}: {dict(value)!r} is not a distribution; give one of {list(DISTRIBUTIONS)} "
             "(e.g. {uniform: [0.1, 0.5]}, {choice: [a, b]}) or a fixed value")
    (distribution, args), = value.items()
    if not isinstance(args, (list, tuple)):
        fail(f"{where}: {distribution} takes a list, got {args!r}")
    args = tuple(args)
    if distribution == "choice":
        if not args:
            fail(f"{where}: choice [] is empty; allowed: {parameter.allowed()}")
        for v in args:
            _check_value(parameter, v, where, fail)
        return Spec(parameter, "choice", args)
    if parameter.kind == "choice":
        fail(f"{where} is categorical: give {{choice: [...]}} with values among {list(parameter.options)}")
    if len(args) != 2 or not all(_number(v) for v in args):
        fail(f"{where}: {distribution} takes [low, high] (two numbers), got {list(args)}")
    low, high = args
    if distribution == "int":
        if parameter.kind != "int" or not all(float(v).is_integer() for v in args):
            fail(f"{where}: int takes [low, high] integers and an integer parameter; allowed for it: "
                 f"{'int, choice' if parameter.kind == 'int' else 'uniform, loguniform, choice'}")
        low, high = int(low), int(high)
        if low > high:
            fail(f"{where}: int [{low}, {high}] is an empty range (low must be <= high)")
    else:
        if parameter.kind == "int":
            fail(f"{where} takes integers: give {{int: [low, high]}} or {{choice: [...]}}, not {distribution}")
        if not low < high:
            fail(f"{where}: {distribution} [{low:g}, {high:g}] is an empty range (low must be < high)")
        if distribution == "loguniform" and low <= 0:
            fail(f"{where}: loguniform [{low:g}, {high:g}] needs low > 0 (a log scale)")
        low, high = float(low), float(high)
    for bound in (low, high):
        _check_value(parameter, bound, where, fail, what=f"{distribution} [{low:g}, {high:g}]")
    return Spec(parameter, distribution, (low, high))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_value(parameter: Parameter, value: Any, where: str, fail, what: str = "") -> None:
    shown = what or repr(value)
    if parameter.kind == "choice":
        ok = value in parameter.options
    elif parameter.kind == "int":
        ok = _number(value) and float(value).is_integer() and value >= parameter.minimum
    elif not _number(value):
        ok = False
    elif parameter.kind == "ratio":
        ok = 0.0 <= value < 1.0
    elif parameter.kind == "positive":
        ok = value > 0
    else:
        ok = value >= 0
    if not ok:
        fail(f"{where}: {shown} is outside what it allows; allowed: {parameter.allowed()}")


def _pretraining_section(section: Any, fail) -> dict[str, dict[str, Any]]:
    if not isinstance(section, Mapping):
        fail(f"'pretraining' must map pretraining methods {sorted(PRETRAININGS)} to their short-run settings")
    out = {}
    for group, settings in section.items():
        method = PRETRAININGS.get(group)
        if method is None:
            fail(f"unknown pretraining method {group!r}; allowed: {sorted(PRETRAININGS)}")
        settings = settings or {}
        allowed = [k for k in COMMON_SETTINGS if k not in ("init_from", "source", "target", "dataset", "resolution")]
        allowed += list(method.settings)
        if not isinstance(settings, Mapping):
            fail(f"pretraining.{group} must be a mapping of settings among {allowed}, got {settings!r}")
        for key, value in settings.items():
            if key not in allowed:
                fail(f"unknown setting pretraining.{group}.{key}; allowed: {allowed}")
            if key in ("max_steps", "batch_size", "num_workers") and not (_number(value) and value >= 1
                                                                          and float(value).is_integer()):
                fail(f"pretraining.{group}.{key} must be an integer >= 1, got {value!r}")
        out[group] = dict(settings)
    return out


def _asha_section(section: Any, fail) -> dict[str, int]:
    allowed = ("grace_period", "reduction_factor")
    if not isinstance(section, Mapping):
        fail(f"'asha' must be a mapping with keys among {list(allowed)}")
    for key, value in section.items():
        if key not in allowed:
            fail(f"unknown setting asha.{key}; allowed: {list(allowed)}")
        least = 2 if key == "reduction_factor" else 1
        if not (_number(value) and float(value).is_integer() and value >= least):
            fail(f"asha.{key} must be an integer >= {least}, got {value!r}")
    return {k: int(v) for k, v in section.items()}


def describe(space: SearchSpace) -> str:
    lines = [f"search space {space.source}" + (f": {space.description}" if space.description else "")]
    for name, spec in space.parameters.items():
        lines.append(f"  {name:20s} {spec.describe()}")
    for group in space.groups:
        settings = space.pretraining_settings(group)
        lines.append(f"  each trial pretrains {group} first (jobs/{PRETRAININGS[group].job}.py, "
                     + ", ".join(f"{k}={v}" for k, v in settings.items() if v != "") + ")")
    return "\n".join(lines)


def catalogue() -> str:
    """The parameters a search space may hold (for --help)."""
    lines = ["parameters of a search space (YAML `parameters:`), with what they allow:"]
    for name, p in PARAMETERS.items():
        lines.append(f"  {name:20s} {p.description}: {p.allowed()}")
    lines.append("distributions: {uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]}, "
                 "{choice: [a, b, ...]}, or a fixed value")
    return "\n".join(lines)


def asdict(space: SearchSpace) -> dict[str, Any]:
    """What the report and the run record keep of the space."""
    return {"source": space.source, "description": space.description, "finetune": dict(space.finetune),
            "pretraining": {g: space.pretraining_settings(g) for g in space.groups},
            "parameters": {n: {"distribution": s.distribution, "values": list(s.values)}
                           for n, s in space.parameters.items()},
            "asha": dict(space.asha)}


__all__ = ["DISTRIBUTIONS", "PARAMETERS", "PRETRAININGS", "Parameter", "Pretraining", "SearchSpace",
           "SearchSpaceError", "Spec", "asdict", "catalogue", "describe", "load", "parse"]
