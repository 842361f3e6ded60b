"""Pretrain PhysioSync's EEG and peripheral encoders (LS-TCL + CM-CA) on stimulus segments.

    python jobs/pretrain_physiosync.py                               # demo DEAP corpus, long + short
    python jobs/pretrain_physiosync.py --dataset dreamer --resolution long
    python jobs/pretrain_physiosync.py --dataset deap --corpus s3://bucket/deap/data_preprocessed_python \\
        --num-workers 4 --use-gpu --output s3://bucket/runs --name physiosync-deap

Windows are 5 s at 128 Hz: EEG (32 DEAP / 14 DREAMER channels, baseline removed, z-scored across
channels) and the peripheral signal (DEAP's GSR; DREAMER's two ECG leads, resampled 256 -> 128 Hz).
The windows of all subjects that saw the same 5 s of the same trial form one segment; each step
splits the subjects into two random groups whose pooled features are the two views. Validation
(--config data.validation_fraction) holds out whole trials. --resolution long trains the 5-s
encoders, short the 1-s encoders on the five slices of each window, both trains the two together.
Exports: eeg_<resolution>.pt and peripheral_<resolution>.pt per checkpoint. On the demo corpus the
encoders are reduced (token widths 32/16, one block; the published sizes with --corpus or --config).
"""
from functools import partial

from physiofm.objectives.physiosync import VARIANTS
from physiofm.platform.cli import add_group, build_parser, config_flag, run_job
from physiofm.platform.demo import physiosync_demo_corpus
from physiofm.platform.methods import PHYSIOSYNC_LAYOUTS, RESOLUTIONS

LEARNING_RATES = {"deap": 7e-4, "dreamer": 1e-4}  # published
# The demo trains reduced encoders (the published sizes hold 138 M parameters: minutes per step on a
# laptop CPU) at a higher rate, long enough for both contrastive losses to fall.
DEMO = {"method": {"long_dim": 32, "short_dim": 16, "depth": 1, "heads": 2, "projector": {"hidden": [64], "out_dim": 32},
                   "head_dim": 32},
        "data": {"batch_size": 8}, "optim": {"lr": 2e-3},
        "run": {"max_steps": 16, "checkpoint_every": 8, "log_every": 1}}


def defaults(dataset: str = "deap", resolution: str = "both") -> dict:
    return {
        "method": {"name": "physiosync", "dataset": dataset, "resolution": resolution},
        "data": {"batch_size": 32},  # segments per worker, each S subjects
        "optim": {"lr": LEARNING_RATES[dataset], "min_lr": 1e-6, "weight_decay": 1e-3, "warmup_steps": 0,
                  "grad_clip": 0.0},
        "run": {"name": f"physiosync-{dataset}-{resolution}", "storage": "runs", "max_steps": 20000,
                "checkpoint_every": 1000},
    }


def parser():
    cli = build_parser(__doc__, defaults(), DEMO)
    method = add_group(cli, "PhysioSync")
    config_flag(method, "--dataset", key="method.dataset", choices=sorted(PHYSIOSYNC_LAYOUTS),
                help="corpus layout: channel counts, learning rate, demo corpus")
    config_flag(method, "--resolution", key="method.resolution", choices=RESOLUTIONS,
                help="long (5-s encoders), short (1-s encoders) or both together")
    config_flag(method, "--variant", key="method.variant", choices=VARIANTS,
                help="LS-TCL of the subject-dependent code, or the cross-subject NT-Xent")
    cli.default_notes["optim.lr"] = "the published rate of --dataset: " + ", ".join(
        f"{name} {rate:g}" for name, rate in LEARNING_RATES.items())
    cli.default_notes["run.name"] = "physiosync-DATASET-RESOLUTION"
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    dataset = args.dataset or "deap"
    return run_job(args, defaults(dataset, args.resolution or "both"), None,
                   partial(physiosync_demo_corpus, dataset), DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
