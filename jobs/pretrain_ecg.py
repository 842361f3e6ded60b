"""Pretrain the ECG encoder (CBraMod architecture, leads as channels) with dual masking.

    python jobs/pretrain_ecg.py                          # demo corpus, local Ray, short run
    python jobs/pretrain_ecg.py --corpus s3://bucket/ptbxl-windows --num-workers 8 --use-gpu \\
        --output s3://bucket/runs --name ecg-base --max-steps 100000
    ray job submit --working-dir . -- python jobs/pretrain_ecg.py --corpus s3://... --output s3://...

Each window is (12 leads, 10 patches, 200 samples); intra-lead masking hides single patches,
inter-lead masking hides whole leads; the loss is MSE on masked patches only.
"""
from physiofm.platform.cli import add_group, build_parser, config_flag, run_job
from physiofm.platform.demo import ecg_demo_corpus

DEFAULTS = {
    "method": {"name": "masked_reconstruction", "modality": "ecg", "intra_ratio": 0.5, "inter_ratio": 0.25},
    "optim": {"lr": 5e-4, "min_lr": 1e-5, "weight_decay": 5e-2, "warmup_steps": 100, "grad_clip": 1.0},
    "run": {"name": "ecg-dual-masking", "storage": "runs", "max_steps": 10000, "checkpoint_every": 500},
}
DEMO = {"data": {"batch_size": 4}, "optim": {"warmup_steps": 2},
        "run": {"max_steps": 12, "checkpoint_every": 6, "log_every": 2}}


def parser():
    cli = build_parser(__doc__, DEFAULTS, DEMO)
    masking = add_group(cli, "dual masking")
    config_flag(masking, "--intra-ratio", key="method.intra_ratio", type=float,
                help="probability of masking each (lead, patch), in [0, 1)")
    config_flag(masking, "--inter-ratio", key="method.inter_ratio", type=float,
                help="probability of masking each whole lead, in [0, 1)")
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_job(args, DEFAULTS, None, ecg_demo_corpus, DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
