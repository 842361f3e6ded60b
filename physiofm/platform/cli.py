"""Command line shared by the `jobs/pretrain_*.py` entrypoints.

Precedence: built-in method defaults < `--config FILE` (YAML) < flags. With no `--corpus`, a job
runs on its embedded demo corpus, written by the synthetic writers into the cache folder
(`$PHYSIOFM_CACHE`, default `~/.cache/physiofm`), with the job's short demo settings.

Every flag that sets a config value is declared with its key (`config_flag`): `--help` states the
default each key resolves to (and the demo's, where it differs) from the same resolution the run
uses, and an invalid value is reported under the flag the user typed, with its config key.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from physiofm.platform.config import ConfigError, TrainConfig, merge

DemoCorpus = Callable[[Path], str]  # writes raw demo recordings under a folder, returns their URI
PLACEHOLDER_CORPUS = "<corpus>"  # stands for a given --corpus when defaults are resolved for --help


def cache_dir() -> Path:
    """Where demo corpora and their prepared windows are kept: $PHYSIOFM_CACHE, else ~/.cache/physiofm."""
    return Path(os.environ.get("PHYSIOFM_CACHE", Path.home() / ".cache" / "physiofm"))


class JobParser(argparse.ArgumentParser):
    """An argument parser whose config flags know their key and state their resolved defaults."""

    def __init__(self, *args, job_defaults: Mapping[str, Any] | None = None,
                 demo_settings: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag_keys: dict[str, tuple[str, str]] = {}  # dest -> (flag, config key)
        self.job_defaults = dict(job_defaults or {})
        self.demo_settings = dict(demo_settings or {})
        self.default_notes: dict[str, str] = {}  # config key -> text after the default
        self._stated = False

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        namespace._parser = self  # run_job maps config keys back to the flags typed
        return namespace, extras

    def format_help(self) -> str:
        if not self._stated:
            self._stated = True
            state_defaults(self)
        return super().format_help()


def config_flag(group, *flags: str, key: str, help: str, **kwargs) -> argparse.Action:
    """A flag that sets config key `key` ("section.field"); its default comes from the config."""
    parser = _owner(group)
    kwargs.setdefault("default", None)  # None = not given: the config's value applies
    action = group.add_argument(*flags, help=help, **kwargs)
    parser.flag_keys[action.dest] = (flags[0], key)
    return action


def _owner(group) -> JobParser:
    parser = getattr(group, "_physiofm_parser", None) or group
    if not isinstance(parser, JobParser):
        raise TypeError("config flags belong to a JobParser (build_parser) or one of its groups")
    return parser


def add_group(parser: JobParser, title: str):
    group = parser.add_argument_group(title)
    group._physiofm_parser = parser  # type: ignore[attr-defined]
    return group


def build_parser(description: str, defaults: Mapping[str, Any] | None = None,
                 demo: Mapping[str, Any] | None = None) -> JobParser:
    parser = JobParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                       job_defaults=defaults, demo_settings=demo)
    data = add_group(parser, "data")
    config_flag(data, "--corpus", key="data.corpus",
                help="prepared windows (a folder or s3:// URI with corpus.json) or raw recordings to prepare "
                     "first; default: the embedded demo corpus in $PHYSIOFM_CACHE (~/.cache/physiofm)")
    config_flag(data, "--batch-size", key="data.batch_size", type=int,
                help="windows per worker per micro-step")
    run = add_group(parser, "run")
    config_flag(run, "--output", "--storage", key="run.storage",
                help="where checkpoints, TensorBoard logs and exports go: a folder (relative to the current "
                     "folder) or s3://bucket/prefix")
    config_flag(run, "--name", key="run.name",
                help="run name, a folder under --output; re-using a name in the same --output resumes that run")
    config_flag(run, "--max-steps", key="run.max_steps", type=int,
                help="optimizer steps in total, counting those of resumed runs")
    config_flag(run, "--checkpoint-every", key="run.checkpoint_every", type=int,
                help="optimizer steps between checkpoints (every rank saves; the last step always does)")
    config_flag(run, "--zero-stage", key="run.zero_stage", type=int,
                help="DeepSpeed ZeRO stage 0-3 (configs in infra/deepspeed/)")
    config_flag(run, "--precision", key="run.precision", choices=["auto", "fp32", "bf16"],
                help="auto: bf16 on GPU, fp32 on CPU")
    config_flag(run, "--max-failures", key="run.max_failures", type=int,
                help="worker-group restarts from the last checkpoint before the run fails")
    config_flag(run, "--seed", key="run.seed", type=int, help="seed of initialisation, masks and shuffling")
    optim = add_group(parser, "optimisation")
    config_flag(optim, "--lr", key="optim.lr", type=float,
                help="peak learning rate of the warm-up + cosine schedule (per optimizer step)")
    config_flag(optim, "--warmup-steps", key="optim.warmup_steps", type=int,
                help="optimizer steps of linear warm-up to --lr")
    config_flag(optim, "--grad-accum", key="optim.grad_accum", type=int, help="micro-steps per optimizer step")
    scaling = add_group(parser, "scaling")
    config_flag(scaling, "--num-workers", key="scaling.num_workers", type=int,
                help="training workers (processes; one GPU each with --use-gpu)")
    config_flag(scaling, "--use-gpu", key="scaling.use_gpu", action="store_true",
                help="one GPU per worker, bf16 with --precision auto")
    config_flag(scaling, "--cpus-per-worker", key="scaling.cpus_per_worker", type=float,
                help="CPUs per worker, as many torch threads (a fraction rounds up); 0 = auto: 1, or less "
                     "where that would leave no CPU for Ray Data")
    config_flag(scaling, "--gpus-per-worker", key="scaling.gpus_per_worker", type=float,
                help="GPUs per worker with --use-gpu (a fraction shares a GPU)")
    config_flag(scaling, "--resource", key="scaling.resources_per_worker", action=ResourceAction,
                metavar="NAME=AMOUNT", help="a named accelerator or custom resource each worker asks for (e.g. "
                "TPU=4, or a node label resource), repeatable")
    config_flag(scaling, "--memory-per-worker", key="scaling.memory_per_worker_gib", type=float, metavar="GIB",
                help="memory each worker reserves, in GiB (Ray's memory resource; 0 = none reserved)")
    config_flag(scaling, "--scale-up-timeout", key="scaling.scale_up_timeout_s", type=float, metavar="SECONDS",
                help="how long to wait for an autoscaler to add the workers' nodes before failing; a request no "
                     "node type can meet fails at once")
    parser.add_argument("--config", help="YAML file with sections method, data, optim, scaling, run; flags "
                                         "override it (default: none)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, as set by `ray job "
                                          "submit`, else a new local Ray)")
    return parser


class ResourceAction(argparse.Action):
    """NAME=AMOUNT, repeatable, into one mapping."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, sep, amount = value.partition("=")
        try:
            number = float(amount) if sep else 1.0
        except ValueError:
            parser.error(f"{option_string} {value}: AMOUNT must be a number (NAME=AMOUNT, e.g. TPU=4)")
        if not name.strip():
            parser.error(f"{option_string} {value}: give NAME=AMOUNT (e.g. TPU=4)")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), name.strip(): number})


def state_defaults(parser: JobParser) -> None:
    """Append to each config flag's help the value its key resolves to, with and without --corpus."""
    if not parser.job_defaults:
        return
    given = flatten(TrainConfig.from_dict(merge(parser.job_defaults,
                                                {"data": {"corpus": PLACEHOLDER_CORPUS}})).to_dict())
    demo = flatten(TrainConfig.from_dict(merge(merge(parser.job_defaults, parser.demo_settings),
                                               {"data": {"corpus": PLACEHOLDER_CORPUS}})).to_dict())
    for action in parser._actions:
        key = parser.flag_keys.get(action.dest, (None, None))[1]
        if key is None or key == "data.corpus" or key not in given:
            continue
        text = f"default: {show(given[key])}"
        if demo[key] != given[key]:
            text += f"; {show(demo[key])} on the demo corpus"
        note = parser.default_notes.get(key)
        action.help = f"{action.help} ({text}{'; ' + note if note else ''}; config key {key})"


def show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "unset"
    if value == "" or value == {}:
        return "none"
    return str(value)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        out[name] = value
    return out


def overrides_from_args(parser: JobParser, args: argparse.Namespace) -> dict[str, Any]:
    """The config values the user gave as flags (nested sections)."""
    out: dict[str, Any] = {}
    for dest, (_, key) in parser.flag_keys.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def resolve_config(parser: JobParser, args: argparse.Namespace, defaults: Mapping[str, Any],
                   demo_settings: Mapping[str, Any], method_flags: Mapping[str, Any] | None = None,
                   file_config: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """(config dict, whether the embedded demo corpus is used), as `run_job` resolves it."""
    flags = merge(overrides_from_args(parser, args), {"method": dict(method_flags or {})})
    config = merge(merge(defaults, file_config or {}), flags)
    if config.get("data", {}).get("corpus"):
        return config, False
    return merge(merge(merge(defaults, demo_settings), file_config or {}), flags), True


def run_job(args: argparse.Namespace, defaults: Mapping[str, Any], method_flags: Mapping[str, Any] | None,
            demo: DemoCorpus, demo_settings: Mapping[str, Any], parser: JobParser | None = None) -> int:
    """Resolve the config, fall back to the demo corpus, train, print the summary. Returns an exit code."""
    import yaml

    from physiofm.platform.console import quiet_driver, say

    quiet_driver()
    parser = parser or getattr(args, "_parser", None) or build_parser("")
    file_config: dict[str, Any] = {}
    if args.config:
        file_config = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(file_config, dict):
            print(f"error: {args.config}: a config file must hold a mapping of sections", file=sys.stderr)
            return 2
    try:
        config, use_demo = resolve_config(parser, args, defaults, demo_settings, method_flags, file_config)
        if use_demo:
            TrainConfig.from_dict(config)  # fail on bad values before writing anything
            folder = cache_dir() / "demo" / config["run"]["name"]
            say(f"no --corpus given: using the embedded demo corpus in {folder}")
            config["data"]["corpus"] = demo(folder / "raw")
            config["data"].setdefault("prepared_cache", str(folder / "windows"))
        cfg = TrainConfig.from_dict(config)
        from physiofm.platform.trainer import pretrain

        summary = pretrain(cfg, address=args.address)
    except ConfigError as err:
        print(f"error: {explain(err, parser, args, args.config)}", file=sys.stderr)
        return 2
    _disconnect()  # the workers' last lines arrive before the summary, not after it
    say(summary.render())
    return 0


def explain(err: Exception, parser: JobParser, args: argparse.Namespace, config_file: str | None = None) -> str:
    """The error under the flag the user typed (and its config key), or under the config file."""
    text = str(err)
    typed = {key: (flag, getattr(args, dest)) for dest, (flag, key) in parser.flag_keys.items()
             if getattr(args, dest, None) is not None}
    match = re.match(r"([a-z_]+\.[a-z_.]+)", text)
    if match and match.group(1) in typed:
        flag, value = typed[match.group(1)]
        shown = "" if value is True else f" {value}"
        return f"{flag}{shown}: {text}"
    mentioned = [f"{flag} sets {key}" for key, (flag, _) in typed.items()
                 if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", text)]
    if mentioned:
        return f"{text} ({'; '.join(mentioned)})"
    if config_file and match:
        return f"{text} (in --config {config_file})"
    return text


def _disconnect() -> None:
    import ray

    # a job run inside a Ray actor (a sweep's trial) keeps its process's connection: it is the actor's
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is None:
        ray.shutdown()
