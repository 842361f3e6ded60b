"""Prepare a corpus of raw recordings into Parquet windows with Ray Data.

    python jobs/prepare_corpus.py --input s3://bucket/tueg/ --output s3://bucket/windows/tueg --modality eeg
    python jobs/prepare_corpus.py            # a small synthetic ECG corpus, into a temporary folder

Re-running with the same output resumes; --overwrite starts again. Prints the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile

from physiofm.data.pipeline import prepare_corpus
from physiofm.data.presets import MODALITY_PRESETS, PRESETS
from physiofm.data.readers import FORMAT_CHOICES
from physiofm.data.synthetic import write_demo_corpus


def preset_argument(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--preset-arg takes key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", action="append", default=[], help="file or folder URI (repeatable)")
    parser.add_argument("--output", help="corpus URI (default: a new temporary folder)")
    parser.add_argument("--modality", choices=sorted(MODALITY_PRESETS), default="ecg")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="overrides the modality's preset")
    parser.add_argument("--preset-arg", action="append", type=preset_argument, default=[],
                        help="preset option key=value (JSON value), e.g. min_duration_s=60")
    parser.add_argument("--format", default="auto", choices=FORMAT_CHOICES)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--files-per-commit", type=int, help="files per resumable batch (default: 16 per CPU, >= 128)")
    parser.add_argument("--shard-mb", type=float, default=128.0)
    parser.add_argument("--dashboard", action="store_true",
                        help="start the Ray dashboard with a local Ray (default: off, ~1 s faster start)")
    parser.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL)")
    args = parser.parse_args(argv)

    inputs = args.input
    if not inputs:
        inputs = [str(write_demo_corpus(args.modality, tempfile.mkdtemp(prefix=f"physiofm-demo-{args.modality}-")))]
        print(f"no --input: wrote a synthetic {args.modality} demo corpus to {inputs[0]}", file=sys.stderr)
    output = args.output or tempfile.mkdtemp(prefix="physiofm-corpus-")
    summary = prepare_corpus(
        inputs, output, preset=args.preset or MODALITY_PRESETS[args.modality], fmt=args.format,
        overwrite=args.overwrite, preset_options=dict(args.preset_arg), files_per_commit=args.files_per_commit,
        shard_mb=args.shard_mb, dashboard=args.dashboard, storage_options={"endpoint_url": args.endpoint_url} if args.endpoint_url else None,
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["windows"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
