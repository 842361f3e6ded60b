"""Embed a prepared corpus with a trained encoder (Ray Data actor pool), writing Parquet.

    python jobs/embed.py      # the ECG demo corpus, with the last export of runs/ecg-dual-masking
    python jobs/embed.py --corpus ~/.cache/physiofm/corpora/demo-ecg \\
        --encoder runs/ecg-dual-masking/step_00000012/export/encoder.pt --output runs/ecg-embeddings
    ray job submit --working-dir . -- python jobs/embed.py --corpus s3://b/windows \\
        --encoder s3://b/runs/ecg/step_00001000/export/encoder.pt --output s3://b/embeddings --actors 4 --use-gpu

Writes OUTPUT/embeddings/*.parquet (one row per window: `embedding` plus the window's metadata:
recording, subject, session, trial, window_index, window_start_s, label, labels) and
OUTPUT/embeddings.json (encoder, pooling, counts, throughput).
"""
import argparse
import sys
from pathlib import Path

DEMO_RUN = "runs/ecg-dual-masking"  # where `python jobs/pretrain_ecg.py` (the README's command) writes


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--corpus", help="prepared windows (folder or s3:// URI with corpus.json); default: the "
                                      "embedded ECG demo corpus, prepared in $PHYSIOFM_CACHE (~/.cache/physiofm)")
    cli.add_argument("--encoder",
                     help="encoder weights: a physiofm CBraMod export (<checkpoint>/export/encoder.pt) or the official "
                          f"CBraMod pretrained_weights.pth; local path or s3://; default: the last export of "
                          f"{DEMO_RUN} (the README's demo run), else an untrained ECG encoder (seed 0)")
    cli.add_argument("--output", help="folder or s3:// URI for the embeddings (default: RUN-embeddings beside the "
                                      "encoder's run, else runs/embeddings)")
    cli.add_argument("--pooling", choices=["mean", "flatten"], default="mean",
                     help="mean over channels and patches (d_model values) or all patches flattened "
                          "(default: %(default)s)")
    cli.add_argument("--batch-size", type=int, default=64, help="windows per encoder call (default: %(default)s)")
    cli.add_argument("--actors", type=int, default=1,
                     help="encoder actors, each holding one encoder copy (default: %(default)s)")
    cli.add_argument("--use-gpu", action="store_true", help="one GPU per actor (default: off)")
    cli.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, as set by `ray job submit`, "
                                       "else a new local Ray)")
    return cli


def demo_corpus(say) -> str:
    """The ECG demo windows of the pretraining job, prepared here when that job has not run yet."""
    from physiofm.data.loader import corpus_info
    from physiofm.platform.cli import cache_dir
    from physiofm.platform.demo import ecg_demo_corpus

    folder = cache_dir() / "demo" / "ecg-dual-masking"
    windows = str(folder / "windows")
    try:
        corpus_info(windows)
    except FileNotFoundError:
        from physiofm.data.pipeline import prepare_corpus

        say(f"no --corpus: preparing the embedded ECG demo corpus into {windows}")
        prepare_corpus([ecg_demo_corpus(folder / "raw")], windows, preset="ecg", progress=say)
    return windows


def default_encoder(say) -> tuple[str, str]:
    """(encoder path, run folder or ""): the last export of the demo run, else an untrained encoder."""
    from physiofm.platform.cli import cache_dir
    from physiofm.platform.trainer import existing_checkpoints

    checkpoints = existing_checkpoints(DEMO_RUN)
    for step in reversed(checkpoints):
        path = Path(DEMO_RUN) / step / "export" / "encoder.pt"
        if path.is_file():
            say(f"no --encoder: using the last export of the demo run, {path}")
            return str(path), DEMO_RUN
    import torch

    from physiofm.encoders import CBraMod, ecg_encoder_config

    path = cache_dir() / "demo" / "untrained-ecg-encoder.pt"
    if not path.is_file():
        torch.manual_seed(0)
        CBraMod(ecg_encoder_config()).save_pretrained(path)
    say(f"no --encoder and no export in {DEMO_RUN} (run `python jobs/pretrain_ecg.py` first for a trained one): "
        f"using an untrained ECG encoder, {path}")
    return str(path), ""


def main(argv=None) -> int:
    from physiofm.platform.commands import next_commands, relative, render_next
    from physiofm.platform.console import quiet_driver, say
    from physiofm.platform.embed import EmbedConfig, embed_corpus
    from physiofm.platform.trainer import connect_ray

    args = parser().parse_args(argv)
    quiet_driver()
    try:
        EmbedConfig(corpus="-", encoder="-", output="-", pooling=args.pooling, batch_size=args.batch_size,
                    actors=args.actors, use_gpu=args.use_gpu).validate()  # bad flags fail before anything starts
        if args.corpus:
            from physiofm.data.loader import corpus_info

            corpus_info(args.corpus)  # a corpus that is not there fails here, by its name, before Ray starts
        encoder, run = (args.encoder, "") if args.encoder else default_encoder(say)
        output = args.output or (f"{run}-embeddings" if run else "runs/embeddings")
        connect_ray(args.address, say)
        corpus = args.corpus or demo_corpus(say)
        summary = embed_corpus(EmbedConfig(corpus=corpus, encoder=encoder, output=output, pooling=args.pooling,
                                           batch_size=args.batch_size, actors=args.actors, use_gpu=args.use_gpu),
                               log=say)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import ray

    ray.shutdown()
    lines = ["=" * 72,
             f"physiofm embed: {summary['windows']} windows, {args.pooling} pooling, in {summary['seconds']:.0f} s",
             f"  embeddings   {relative(output)}/embeddings/*.parquet (one row per window, with its metadata)",
             f"  summary      {relative(output)}/embeddings.json",
             f"  read with    pandas.read_parquet({relative(output) + '/embeddings'!r})",
             *render_next(next_commands("embed", output=relative(output), encoder=relative(encoder),
                                        corpus=relative(corpus))),
             "=" * 72]
    say("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
