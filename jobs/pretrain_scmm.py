"""Pretrain the SCMM encoder on the source corpus of a cross-corpus pair (soft contrastive masked modeling).

    python jobs/pretrain_scmm.py                                   # SEED -> SEED-IV on a demo SEED corpus
    python jobs/pretrain_scmm.py --source deap --target seed       # demo DEAP corpus, 32 channels
    python jobs/pretrain_scmm.py --source seed --target deap --source-corpus s3://bucket/seed/Preprocessed_EEG \\
        --num-workers 4 --use-gpu --output s3://bucket/runs --name scmm-seed-deap

Each window is the differential entropy of 5 bands (delta..gamma) per channel over 1 s: (62, 5),
or (32, 5) when DEAP is the source or the target (SEED's channels picked by 10-20 name in DEAP's
order). Features are min-max scaled per feature with a fit on the training side only. The loss is
the uncertainty-weighted sum of the soft contrastive loss and the aggregated reconstruction, with
the published (alpha, sharpness, tau) of the pair unless --alpha/--sharpness/--tau are given.
Exports: encoder.pt (the CNN) and feature_scaling.pt (the fitted scaler) per checkpoint.
"""
from functools import partial

from physiofm.platform.cli import build_parser, run_job
from physiofm.platform.demo import scmm_demo_corpus
from physiofm.platform.methods import SCMM_CORPORA

OPTIM = {"lr": 5e-4, "min_lr": 1e-6, "weight_decay": 3e-4, "betas": [0.9, 0.99], "warmup_steps": 0, "grad_clip": 0.0}
DEMO = {"data": {"batch_size": 16}, "run": {"max_steps": 12, "checkpoint_every": 6, "log_every": 2}}


def main(argv=None) -> int:
    parser = build_parser(__doc__)
    method = parser.add_argument_group("SCMM")
    method.add_argument("--source", choices=SCMM_CORPORA, default="seed",
                        help="corpus pretrained on; its layout for the demo corpus (default seed)")
    method.add_argument("--target", choices=SCMM_CORPORA, default="seed_iv",
                        help="corpus transferred to: picks the published (alpha, sharpness, tau) and the "
                             "channel set (default seed_iv)")
    method.add_argument("--source-corpus", dest="corpus", help="same as --corpus: the source corpus")
    method.add_argument("--alpha", type=float, help="upper bound of the soft negative weights")
    method.add_argument("--sharpness", type=float, help="sharpness of the soft weights")
    method.add_argument("--tau", type=float, help="temperature of the contrastive loss and the aggregator")
    method.add_argument("--mask-ratio", type=float, help="hybrid masking ratio (0.5)")
    args = parser.parse_args(argv)
    defaults = {
        "method": {"name": "scmm", "source": args.source, "target": args.target},
        "data": {"batch_size": 256},  # per worker: the soft contrastive loss contrasts within a worker's batch
        "optim": OPTIM,
        "run": {"name": f"scmm-{args.source}-{args.target}", "storage": "runs", "max_steps": 30000,
                "checkpoint_every": 1000},
    }
    flags = {"source": args.source, "target": args.target, "alpha": args.alpha, "sharpness": args.sharpness,
             "tau": args.tau, "mask_ratio": args.mask_ratio}
    return run_job(args, defaults, flags, partial(scmm_demo_corpus, args.source), DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
