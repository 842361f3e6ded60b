"""Command line shared by the `jobs/pretrain_*.py` entrypoints.

Precedence: built-in method defaults < `--config FILE` (YAML) < flags. With no `--corpus`, a job
runs on its embedded demo corpus, written by the synthetic writers into a cache directory.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from physiofm.platform.config import ConfigError, TrainConfig, merge

DemoCorpus = Callable[[Path], str]  # writes raw demo recordings under a folder, returns their URI


def cache_dir() -> Path:
    return Path(os.environ.get("PHYSIOFM_CACHE", Path.home() / ".cache" / "physiofm"))


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", help="prepared windows (a folder or s3:// URI with corpus.json) or raw "
                                       "recordings to prepare first; default: the embedded demo corpus")
    data.add_argument("--batch-size", type=int, help="windows per worker per micro-step (default 16)")
    run = parser.add_argument_group("run")
    run.add_argument("--output", "--storage", dest="storage",
                     help="where checkpoints, TensorBoard logs and exports go: a folder or s3://bucket/prefix "
                          "(default ./runs)")
    run.add_argument("--name", help="run name; re-using a name in the same --output resumes that run")
    run.add_argument("--max-steps", type=int, help="optimizer steps in total, counting resumed ones")
    run.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (all ranks save)")
    run.add_argument("--zero-stage", type=int, help="DeepSpeed ZeRO stage 0-3 (default 2; "
                                                    "configs in infra/deepspeed/)")
    run.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 on GPU, fp32 on CPU")
    run.add_argument("--max-failures", type=int, help="worker-group restarts from the last checkpoint")
    run.add_argument("--seed", type=int)
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--lr", type=float, help="peak learning rate of the warm-up + cosine schedule")
    optim.add_argument("--warmup-steps", type=int)
    optim.add_argument("--grad-accum", type=int, help="micro-steps per optimizer step")
    scaling = parser.add_argument_group("scaling")
    scaling.add_argument("--num-workers", type=int, help="training workers (default 2)")
    scaling.add_argument("--use-gpu", action="store_true", default=None, help="one GPU per worker, bf16")
    scaling.add_argument("--cpus-per-worker", type=float, help="CPUs per worker, as many torch threads (a fraction rounds "
                                                               "up); default: auto, leaving a CPU for Ray Data")
    parser.add_argument("--config", help="YAML file with sections method, data, optim, scaling, run; "
                                         "flags override it")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, as set by "
                                          "`ray job submit`, else a new local Ray)")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "data": {"corpus": args.corpus, "batch_size": args.batch_size},
        "optim": {"lr": args.lr, "warmup_steps": args.warmup_steps, "grad_accum": args.grad_accum},
        "scaling": {"num_workers": args.num_workers, "use_gpu": args.use_gpu,
                    "cpus_per_worker": args.cpus_per_worker},
        "run": {"storage": args.storage, "name": args.name, "max_steps": args.max_steps,
                "checkpoint_every": args.checkpoint_every, "zero_stage": args.zero_stage,
                "precision": args.precision, "max_failures": args.max_failures, "seed": args.seed},
    }


def run_job(args: argparse.Namespace, defaults: Mapping[str, Any], method_flags: Mapping[str, Any],
            demo: DemoCorpus, demo_settings: Mapping[str, Any]) -> int:
    """Resolve the config, fall back to the demo corpus, train, print the summary. Returns an exit code."""
    import yaml

    from physiofm.platform.trainer import pretrain

    file_config: dict[str, Any] = {}
    if args.config:
        file_config = yaml.safe_load(Path(args.config).read_text()) or {}
        if not isinstance(file_config, dict):
            print(f"error: {args.config}: a config file must hold a mapping of sections", file=sys.stderr)
            return 2
    flags = merge(overrides_from_args(args), {"method": dict(method_flags)})
    config = merge(merge(defaults, file_config), flags)
    try:
        if not config.get("data", {}).get("corpus"):
            # Embedded default: a small synthetic corpus, and short-run settings unless given.
            config = merge(merge(merge(defaults, demo_settings), file_config), flags)
            TrainConfig.from_dict(config)  # fail on bad values before writing anything
            folder = cache_dir() / "demo" / defaults["run"]["name"]
            print(f"no --corpus given: using the embedded demo corpus in {folder}")
            config["data"]["corpus"] = demo(folder / "raw")
            config["data"].setdefault("prepared_cache", str(folder / "windows"))
        cfg = TrainConfig.from_dict(config)
        summary = pretrain(cfg, address=args.address)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.render())
    return 0
