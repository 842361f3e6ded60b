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
Exports: eeg_<resolution>.pt and peripheral_<resolution>.pt per checkpoint.
"""
from functools import partial

from physiofm.objectives.physiosync import VARIANTS
from physiofm.platform.cli import build_parser, run_job
from physiofm.platform.demo import physiosync_demo_corpus
from physiofm.platform.methods import PHYSIOSYNC_LAYOUTS, RESOLUTIONS

LEARNING_RATES = {"deap": 7e-4, "dreamer": 1e-4}  # published
DEMO = {"data": {"batch_size": 4}, "run": {"max_steps": 12, "checkpoint_every": 6, "log_every": 2}}


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    method = parser.add_argument_group("PhysioSync")
    method.add_argument("--dataset", choices=sorted(PHYSIOSYNC_LAYOUTS), default="deap",
                        help="corpus layout (channel counts, learning rate, demo corpus; default deap)")
    method.add_argument("--resolution", choices=RESOLUTIONS, default="both",
                        help="long (5-s encoders), short (1-s encoders) or both together (default)")
    method.add_argument("--variant", choices=VARIANTS,
                        help="LS-TCL of the subject-dependent code (default) or the cross-subject NT-Xent")
    args = parser.parse_args(argv)
    defaults = {
        "method": {"name": "physiosync", "dataset": args.dataset},
        "data": {"batch_size": 32},  # segments per worker, each S subjects
        "optim": {"lr": LEARNING_RATES[args.dataset], "min_lr": 1e-6, "weight_decay": 1e-3, "warmup_steps": 0,
                  "grad_clip": 0.0},
        "run": {"name": f"physiosync-{args.dataset}-{args.resolution}", "storage": "runs", "max_steps": 20000,
                "checkpoint_every": 1000},
    }
    flags = {"dataset": args.dataset, "resolution": args.resolution, "variant": args.variant}
    return run_job(args, defaults, flags, partial(physiosync_demo_corpus, args.dataset), DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
