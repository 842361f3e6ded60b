"""Pretrain the CBraMod EEG encoder by masked patch reconstruction (the official recipe).

    python jobs/pretrain_eeg.py                                      # demo corpus, short run
    python jobs/pretrain_eeg.py --init-from pretrained_weights.pth   # continue the authors' weights
    ray job submit --working-dir . -- python jobs/pretrain_eeg.py --corpus s3://bucket/tueg-windows ...

Windows are (19 channels, 30 patches, 200 samples) in units of 100 µV; each patch is masked
with probability --mask-ratio (0.5) and the loss is MSE on masked patches only.
"""
from physiofm.platform.cli import add_group, build_parser, config_flag, run_job
from physiofm.platform.demo import eeg_demo_corpus

DEFAULTS = {
    "method": {"name": "masked_reconstruction", "modality": "eeg", "intra_ratio": 0.5, "inter_ratio": 0.0},
    "optim": {"lr": 5e-4, "min_lr": 1e-5, "weight_decay": 5e-2, "warmup_steps": 100, "grad_clip": 1.0},
    "run": {"name": "cbramod-eeg", "storage": "runs", "max_steps": 10000, "checkpoint_every": 500},
}
DEMO = {"data": {"batch_size": 2}, "optim": {"warmup_steps": 2},
        "run": {"max_steps": 8, "checkpoint_every": 4, "log_every": 2}}


def parser():
    cli = build_parser(__doc__, DEFAULTS, DEMO)
    method = add_group(cli, "CBraMod")
    config_flag(method, "--mask-ratio", key="method.intra_ratio", type=float,
                help="probability of masking each patch, in [0, 1)")
    config_flag(method, "--init-from", key="method.init_from",
                help="start from these weights: the official pretrained_weights.pth or a physiofm export "
                     "(local path or s3://); ignored when the run resumes from its own checkpoint")
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return run_job(args, DEFAULTS, None, eeg_demo_corpus, DEMO)


if __name__ == "__main__":
    raise SystemExit(main())
