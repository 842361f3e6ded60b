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

from physiofm.platform.cli import add_group, build_parser, config_flag, run_job
from physiofm.platform.config import TrainConfig
from physiofm.platform.demo import scmm_demo_corpus
from physiofm.platform.methods import SCMM_CORPORA

OPTIM = {"lr": 5e-4, "min_lr": 1e-6, "weight_decay": 3e-4, "betas": [0.9, 0.99], "warmup_steps": 0, "grad_clip": 0.0}
# The demo holds out one of its two recordings: a validation loss, and the scaler fitted on the other
DEMO = {"data": {"batch_size": 16, "validation_fraction": 0.5}, "optim": {"lr": 1e-3},
        "run": {"max_steps": 12, "checkpoint_every": 6, "log_every": 1}}


def defaults(source: str = "seed", target: str = "seed_iv") -> dict:
    return {
        "method": {"name": "scmm", "source": source, "target": target},
        "data": {"batch_size": 256},  # per worker: the soft contrastive loss contrasts within a worker's batch
        "optim": OPTIM,
        "run": {"name": f"scmm-{source}-{target}", "storage": "runs", "max_steps": 30000, "checkpoint_every": 1000},
    }


def parser():
    cli = build_parser(__doc__, defaults(), DEMO)
    method = add_group(cli, "SCMM")
    config_flag(method, "--source", key="method.source", choices=SCMM_CORPORA,
                help="corpus pretrained on; its layout for the demo corpus")
    config_flag(method, "--target", key="method.target", choices=SCMM_CORPORA,
                help="corpus transferred to: picks the published (alpha, sharpness, tau) and the channel set")
    config_flag(method, "--source-corpus", key="data.corpus", dest="source_corpus",
                help="same as --corpus: the source corpus")
    config_flag(method, "--alpha", key="method.alpha", type=float, help="upper bound of the soft negative weights")
    config_flag(method, "--sharpness", key="method.sharpness", type=float, help="sharpness of the soft weights")
    config_flag(method, "--tau", key="method.tau", type=float,
                help="temperature of the contrastive loss and the aggregator")
    config_flag(method, "--mask-ratio", key="method.mask_ratio", type=float, help="hybrid masking ratio, in [0, 1)")
    cli.default_notes["run.name"] = "scmm-SOURCE-TARGET"
    published = TrainConfig.from_dict({**defaults(), "data": {"corpus": "x"}}).method.soft_weights()
    for key, value in zip(("alpha", "sharpness", "tau"), published):
        cli.default_notes[f"method.{key}"] = f"unset = published for the --source/--target pair, {value:g} for seed->seed_iv"
    return cli


def main(argv=None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    return run_job(args, defaults(args.source or "seed", args.target or "seed_iv"), None,
                   partial(scmm_demo_corpus, args.source or "seed"), DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
