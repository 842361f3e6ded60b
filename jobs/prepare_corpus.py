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

from physiofm.data.output import OutputBusy
from physiofm.data.pipeline import OutputStorageError, prepare_corpus
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
    parser.add_argument("--budget", action="append", type=preset_argument, default=[], metavar="KEY=VALUE",
                        help="per-file limit, checked before a file is decoded (JSON value), e.g. "
                             "max_recording_mib=2048, max_upsampling=16, seconds_per_file=120, "
                             'rates_hz=\'{"eeg": [100, 10000]}\' (defaults and meaning: docs/data.md)')
    parser.add_argument("--worker-memory-mib", type=float,
                        help="memory a worker may reach on one file before that file is rejected (default: the "
                             "cluster's memory per CPU)")
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
    try:
        summary = run(args, inputs, output)
    except (ValueError, OutputBusy, OutputStorageError) as error:  # a refused output, a busy one, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0 if summary["windows"] > 0 else 1


def run(args: argparse.Namespace, inputs: list[str], output: str) -> dict:
    return prepare_corpus(
        inputs, output, preset=args.preset or MODALITY_PRESETS[args.modality], fmt=args.format,
        overwrite=args.overwrite, preset_options=dict(args.preset_arg), files_per_commit=args.files_per_commit,
        shard_mb=args.shard_mb, dashboard=args.dashboard, budget=dict(args.budget),
        worker_memory_mib=args.worker_memory_mib, storage_options={"endpoint_url": args.endpoint_url} if args.endpoint_url else None,
    )


if __name__ == "__main__":
    sys.exit(main())
