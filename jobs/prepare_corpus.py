"""Prepare a corpus of raw recordings into Parquet windows with Ray Data.

    python jobs/prepare_corpus.py      # the embedded 12-lead ECG demo corpus, into ~/.cache/physiofm/corpora/
    python jobs/prepare_corpus.py --input s3://bucket/tueg/ --output s3://bucket/windows/tueg --modality eeg

Writes OUTPUT/windows/*.parquet (tensor `x` + metadata), OUTPUT/manifest.parquet (one row per input:
status, reason, windows) and OUTPUT/corpus.json. Re-running with the same output resumes;
--overwrite starts again. Ends with what it wrote and the pretraining command that reads it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from physiofm.data.presets import MODALITY_PRESETS, PRESETS
from physiofm.data.readers import FORMAT_CHOICES

DEMO_CORPORA = {"ecg": "ecg-dual-masking", "eeg": "cbramod-eeg"}  # the pretraining jobs' demo folders


def preset_argument(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--preset-arg takes key=value, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key, tuple(parsed) if isinstance(parsed, list) else parsed


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--input", action="append", default=[],
                     help="file or folder URI, walked recursively (repeatable); default: the embedded demo "
                          "corpus of --modality, written into $PHYSIOFM_CACHE/demo (~/.cache/physiofm/demo)")
    cli.add_argument("--output", help="corpus folder or s3:// URI (default: $PHYSIOFM_CACHE/corpora/NAME, NAME "
                                      "from the input folder, demo-MODALITY for the demo corpus)")
    cli.add_argument("--modality", choices=sorted(MODALITY_PRESETS), default="ecg",
                     help="picks the preprocessing preset: " + ", ".join(
                         f"{m} -> {p}" for m, p in sorted(MODALITY_PRESETS.items())) + " (default: %(default)s)")
    cli.add_argument("--preset", choices=sorted(PRESETS), help="a preset by name, instead of the modality's")
    cli.add_argument("--preset-arg", action="append", type=preset_argument, default=[],
                     help="preset option key=value (JSON value), e.g. min_duration_s=60 (repeatable)")
    cli.add_argument("--format", default="auto", choices=FORMAT_CHOICES,
                     help="reader: auto picks it from each file's extension; a named format reads only its "
                          "extension (default: %(default)s)")
    cli.add_argument("--overwrite", action="store_true",
                     help="delete what an earlier run wrote to --output and start again (default: resume it)")
    cli.add_argument("--budget", action="append", type=preset_argument, default=[], metavar="KEY=VALUE",
                     help="per-file limit, checked before a file is decoded (JSON value), e.g. "
                          "max_recording_mib=2048, max_upsampling=16, seconds_per_file=120, "
                          'rates_hz=\'{"eeg": [100, 10000]}\' (defaults and meaning: docs/data.md)')
    cli.add_argument("--worker-memory-mib", type=float,
                     help="memory a worker may reach on one file before that file is rejected (default: the "
                          "cluster's memory per CPU)")
    cli.add_argument("--files-per-commit", type=int,
                     help="files per resumable batch (default: 16 per cluster CPU, at least 128)")
    cli.add_argument("--shard-mb", type=float, default=128.0,
                     help="target size of each Parquet shard, in MiB (default: %(default)g)")
    cli.add_argument("--dashboard", action="store_true",
                     help="start the Ray dashboard with a local Ray (default: off, ~1 s faster start)")
    cli.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    cli.add_argument("--json", action="store_true", help="print the summary as JSON (for scripts) instead of text")
    cli.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, as set by `ray job submit`, "
                                       "else a new local Ray)")
    return cli


def main(argv: list[str] | None = None) -> int:
    from physiofm.platform.cli import cache_dir
    from physiofm.platform.commands import next_commands, relative, render_next
    from physiofm.platform.console import quiet_driver, say

    args = parser().parse_args(argv)
    quiet_driver()
    if args.json:  # stdout holds the JSON document only
        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    inputs = list(args.input)
    options = {"endpoint_url": args.endpoint_url} if args.endpoint_url else None
    if inputs:
        name = Path(inputs[0].rstrip("/")).name or "corpus"
    else:
        from physiofm.platform import demo

        writer = {"ecg": demo.ecg_demo_corpus, "eeg": demo.eeg_demo_corpus}[args.modality]
        inputs = [writer(cache_dir() / "demo" / DEMO_CORPORA[args.modality] / "raw")]
        name = f"demo-{args.modality}"
        say(f"no --input: using the embedded {args.modality} demo corpus in {inputs[0]}")
    output = args.output or str(cache_dir() / "corpora" / name)
    preset = args.preset or MODALITY_PRESETS[args.modality]

    from physiofm.data.pipeline import check_inputs, prepare_corpus

    try:
        check_inputs(inputs, args.format, **(options or {}))  # before any Ray starts or any folder is made
    except ValueError as err:
        print(f"error: --input: {err}", file=sys.stderr)
        return 2
    from physiofm.data.output import OutputBusy
    from physiofm.data.pipeline import OutputStorageError
    from physiofm.platform.cluster import reachable_cpus
    from physiofm.platform.trainer import connect_ray

    try:
        summary = prepare_corpus(
            inputs, output, preset=preset, fmt=args.format, overwrite=args.overwrite,
            preset_options=dict(args.preset_arg), files_per_commit=args.files_per_commit, shard_mb=args.shard_mb,
            budget=dict(args.budget), worker_memory_mib=args.worker_memory_mib, storage_options=options,
            progress=say, connect=lambda: connect_ray(args.address, say, dashboard=args.dashboard),
            plan_cpus=reachable_cpus)
    except (ValueError, OutputBusy, OutputStorageError) as error:  # a refused output, a busy one, a full disk
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        lines = ["=" * 72,
                 f"physiofm prepare: {summary['windows']} windows from {summary['ok']} of {summary['files']} "
                 f"files ({summary['rejected']} rejected), {summary['hours']:.3f} h of signal",
                 f"  corpus       {relative(output)}",
                 "               windows/*.parquet, manifest.parquet (one row per input), corpus.json"]
        for reason, count in sorted(summary.get("rejected_reasons", {}).items()):
            lines.append(f"  rejected     {count} x {reason}")
        if summary["windows"] > 0:
            lines += render_next(next_commands("prepare", corpus=relative(output), modality=args.modality))
        lines.append("=" * 72)
        say("\n".join(lines))
    return 0 if summary["windows"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
