"""Sweep masking ratios, soft-weight temperatures and fusion heads on an emotion task with Ray Tune.

    python jobs/tune_emotion.py                      # demo DREAMER: fusion heads, 8 trials, ASHA + Optuna TPE
    python jobs/tune_emotion.py --search-space infra/tune/ecg-dual-masking.yaml --num-samples 16
    python jobs/tune_emotion.py --search-space infra/tune/scmm.yaml --storage s3://bucket/sweeps --name scmm-a
    ray job submit --working-dir . -- python jobs/tune_emotion.py --search-space infra/tune/eeg-ecg-fusion.yaml \\
        --dataset dreamer --root s3://bucket/DREAMER --num-samples 64 --storage s3://bucket/sweeps \\
        --study-storage postgresql://optuna@db/optuna

A trial fine-tunes every fold of the protocol with its values (after pretraining, briefly and with
its masking ratios or temperatures, each encoder the search space names) and is scored on the
validation split of each fold's training side; the test folds are predicted once, after the sweep,
by the best configuration. Writes under STORAGE/NAME/: one folder per trial (results, TensorBoard
event files with the HParams summary, the trial's log), optuna.db (the Optuna study, for
optuna-dashboard), pretraining/TRIAL/ (the trials' pretraining runs), best/ (the best configuration's
fine-tuning outputs, with its test metrics) and report/ (summary.md, summary.json, plots).
Running the same command again (same --storage and --name) resumes the sweep: finished trials are
kept, interrupted ones run again.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from physiofm.evaluation.protocols import PROTOCOLS
from physiofm.platform.config import ConfigError
from physiofm.platform.search_space import catalogue
from physiofm.platform.sweep import DEFAULT_SPACE, SCHEDULERS, SEARCHES, SweepConfig

DEFAULTS = SweepConfig()
SPACES = sorted(p.name for p in DEFAULT_SPACE.parent.glob("*.yaml"))


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog=catalogue() + f"\nshipped search spaces (infra/tune/): {', '.join(SPACES)}")
    sweep = cli.add_argument_group("sweep")
    sweep.add_argument("--search-space", default="", metavar="FILE",
                       help=f"YAML search space (default {DEFAULT_SPACE.relative_to(DEFAULT_SPACE.parents[2])})")
    sweep.add_argument("--num-samples", type=int, default=DEFAULTS.num_samples,
                       help=f"trials in the sweep (default {DEFAULTS.num_samples})")
    sweep.add_argument("--max-concurrent", type=int, default=DEFAULTS.max_concurrent,
                       help="trials at once (default 0: as many as the cluster's resources hold; more asks the "
                            "autoscaler for nodes)")
    sweep.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULTS.scheduler,
                       help="asha: stop trials early on the validation metric between epochs; fifo: run all "
                            f"(default {DEFAULTS.scheduler})")
    sweep.add_argument("--search", choices=SEARCHES, default=DEFAULTS.search,
                       help=f"optuna: TPE, seeded; random: random search (default {DEFAULTS.search})")
    sweep.add_argument("--seed", type=int, default=DEFAULTS.seed, help="search seed; also the split seed unless "
                                                                      "the space sets finetune.seed (default 0)")
    sweep.add_argument("--storage", default=DEFAULTS.storage,
                       help=f"folder or s3:// URI of the sweep's results (default {DEFAULTS.storage})")
    sweep.add_argument("--name", default=DEFAULTS.name,
                       help=f"sweep name; the same name in the same --storage resumes it (default {DEFAULTS.name})")
    sweep.add_argument("--study-storage", default="", metavar="URL",
                       help="SQLAlchemy URL of the Optuna study, e.g. postgresql://user@host/db (default: "
                            "sqlite:///STORAGE/NAME/optuna.db)")
    sweep.add_argument("--cpus-per-trial", type=float, default=DEFAULTS.cpus_per_trial,
                       help=f"CPUs each trial asks for (its folds' torch threads; default {DEFAULTS.cpus_per_trial:g})")
    sweep.add_argument("--gpus-per-trial", type=float, default=DEFAULTS.gpus_per_trial,
                       help=f"GPUs each trial asks for (default {DEFAULTS.gpus_per_trial:g})")
    sweep.add_argument("--top-k", type=int, default=DEFAULTS.top_k, help="trials in the report's table (default 5)")
    sweep.add_argument("--no-test", action="store_true",
                       help="do not fine-tune the best configuration on its test folds at the end")
    task = cli.add_argument_group("the emotion task (override the search space's finetune section)")
    task.add_argument("--dataset", help="deap, dreamer, seed, seediv or amigos")
    task.add_argument("--root", help="the dataset's native layout (folder or s3:// URI; default: the demo corpus)")
    task.add_argument("--protocol", choices=list(PROTOCOLS))
    task.add_argument("--label", help="label scheme (see jobs/finetune_emotion.py --help)")
    task.add_argument("--modalities", help="comma list, e.g. eeg,ecg")
    task.add_argument("--encoder", help="encoder family or MODALITY=NAME pairs (modalities no pretraining replaces)")
    task.add_argument("--init", help="pretrained weights of a given checkpoint (as jobs/finetune_emotion.py --init)")
    task.add_argument("--freeze", action="store_true", default=None, help="keep the encoders' weights fixed")
    task.add_argument("--folds", type=int, help="k of subject-dependent / cross-subject k-fold")
    task.add_argument("--epochs", type=int, help="fine-tuning epochs of a trial (ASHA's longest)")
    task.add_argument("--selection-metric", help="validation metric that picks the epoch and scores the trial "
                                                 "(default kappa)")
    task.add_argument("--prepared-cache", help="where prepared windows are kept (default: the cache folder)")
    cli.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local Ray)")
    return cli


def config_from_args(args: argparse.Namespace, argv: list[str]) -> SweepConfig:
    finetune = {"dataset": args.dataset, "root": args.root, "protocol": args.protocol, "label": args.label,
                "modalities": tuple(m for m in args.modalities.split(",") if m) if args.modalities else None,
                "encoder": args.encoder, "init": args.init, "freeze": args.freeze, "folds": args.folds,
                "epochs": args.epochs, "selection_metric": args.selection_metric,
                "prepared_cache": args.prepared_cache}
    if "--seed" in argv:
        finetune["seed"] = args.seed
    return SweepConfig(search_space=args.search_space, num_samples=args.num_samples,
                       max_concurrent=args.max_concurrent, scheduler=args.scheduler, search=args.search,
                       storage=args.storage, name=args.name, study_storage=args.study_storage, seed=args.seed,
                       cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, top_k=args.top_k,
                       evaluate_best=not args.no_test, finetune={k: v for k, v in finetune.items() if v is not None},
                       command=" ".join(shlex.quote(a) for a in ["python", "jobs/tune_emotion.py", *argv]))


def main(argv: list[str] | None = None) -> int:
    from physiofm.evaluation import ProtocolError
    from physiofm.platform.search_space import describe
    from physiofm.platform.sweep import plan_sweep, run_sweep

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(parser().parse_args(argv), argv)
    try:
        checked = plan_sweep(cfg)  # the space and every trial's request, before Ray or any trial starts
        print(describe(checked.space))
        outcome = run_sweep(cfg, address=parser().parse_args(argv).address, checked=checked)
    except (ConfigError, ProtocolError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    s = outcome.summary
    report = f"{outcome.sweep_uri}/report"
    print("=" * 72)
    print(f"physiofm sweep '{s['name']}': {s['trials']['total']} trials ({s['trials']['stopped_early']} stopped early "
          f"by ASHA at epochs {s['asha_stops'] or '-'}), {s['wall_s'] / 60:.1f} min, {s['trial_hours']:.3f} trial-hours")
    print(f"  best {s['best']['trial']}: {s['metric']} {s['best']['value']:.4f}; "
          + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s["best"]["config"].items()))
    if "test" in s:
        mean = s["test"]["mean"]
        print(f"  its test metrics (computed once): balanced accuracy {mean.get('balanced_accuracy', float('nan')):.3f}"
              f", kappa {mean.get('kappa', float('nan')):.3f} (chance {s['test']['chance'].get('balanced_accuracy', 0):.3f})")
    print(f"  wrote {report}/: summary.md, summary.json, metric_vs_parameters.png, parallel_coordinates.png, "
          "learning_curves.png")
    local = not outcome.sweep_uri.startswith("s3://")
    print("  next:")
    print(f"    re-run the best:  {s['best']['command']}")
    print(f"    tensorboard       tensorboard --logdir {outcome.sweep_uri if local else '<a local copy>'} --host 127.0.0.1")
    print(f"    optuna-dashboard  optuna-dashboard {s['settings']['study']} --host 127.0.0.1")
    print(f"    more trials       the same command with a larger --num-samples and another --name")
    print("=" * 72)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
