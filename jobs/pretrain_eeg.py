"""Pretrain the CBraMod EEG encoder by masked patch reconstruction (the official recipe).

    python jobs/pretrain_eeg.py                                      # demo corpus, short run
    python jobs/pretrain_eeg.py --init-from pretrained_weights.pth   # continue the authors' weights
    ray job submit --working-dir . -- python jobs/pretrain_eeg.py --corpus s3://bucket/tueg-windows ...

Windows are (19 channels, 30 patches, 200 samples) in units of 100 µV; each patch is masked
with probability --mask-ratio (0.5) and the loss is MSE on masked patches only.
"""
from physiofm.platform.cli import build_parser, run_job
from physiofm.platform.demo import eeg_demo_corpus

DEFAULTS = {
    "method": {"name": "masked_reconstruction", "modality": "eeg", "intra_ratio": 0.5, "inter_ratio": 0.0},
    "optim": {"lr": 5e-4, "min_lr": 1e-5, "weight_decay": 5e-2, "warmup_steps": 100, "grad_clip": 1.0},
    "run": {"name": "cbramod-eeg", "storage": "runs", "max_steps": 10000, "checkpoint_every": 500},
}
DEMO = {"data": {"batch_size": 2}, "optim": {"warmup_steps": 2},
        "run": {"max_steps": 8, "checkpoint_every": 4, "log_every": 2}}


def parser():
    cli = build_parser(__doc__)
    cli.add_argument("--mask-ratio", type=float, help="probability of masking each patch (0.5)")
    cli.add_argument("--init-from", help="start from these weights: the official pretrained_weights.pth "
                                            "or a physiofm export (local path or s3://)")
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_job(args, DEFAULTS, {"intra_ratio": args.mask_ratio, "init_from": args.init_from},
                   eeg_demo_corpus, DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
