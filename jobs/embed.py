"""Embed a prepared corpus with a trained encoder (Ray Data actor pool), writing Parquet.

    python jobs/embed.py --corpus runs/corpus --encoder runs/ecg/step_00001000/export/encoder.pt \\
        --output runs/ecg-embeddings
    ray job submit --working-dir . -- python jobs/embed.py --corpus s3://b/windows \\
        --encoder s3://b/runs/ecg/step_00001000/export/encoder.pt --output s3://b/embeddings --actors 4 --use-gpu

Writes OUTPUT/embeddings/*.parquet (one row per window: `embedding` plus the window's metadata:
recording, subject, session, trial, window_index, window_start_s, label, labels) and
OUTPUT/embeddings.json (encoder, pooling, counts, throughput).
"""
import argparse
import sys

from physiofm.platform.embed import EmbedConfig, embed_corpus


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--corpus", required=True, help="prepared windows (folder or s3:// URI with corpus.json)")
    cli.add_argument("--encoder", required=True,
                        help="encoder weights: a physiofm export (<checkpoint>/export/encoder.pt) or the official "
                             "CBraMod pretrained_weights.pth; local path or s3://")
    cli.add_argument("--output", required=True, help="folder or s3:// URI for the embeddings")
    cli.add_argument("--pooling", choices=["mean", "flatten"], default="mean",
                        help="mean over channels and patches (d_model values) or all patches flattened")
    cli.add_argument("--batch-size", type=int, default=64, help="windows per encoder call")
    cli.add_argument("--actors", type=int, default=1, help="encoder actors (each holds one encoder copy)")
    cli.add_argument("--use-gpu", action="store_true", help="one GPU per actor")
    return cli


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        embed_corpus(EmbedConfig(corpus=args.corpus, encoder=args.encoder, output=args.output, pooling=args.pooling,
                                 batch_size=args.batch_size, actors=args.actors, use_gpu=args.use_gpu))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
