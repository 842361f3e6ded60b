"""Throughput of prepare_corpus on a synthetic corpus (files/s, windows/s, MiB/s of raw input),
against a baseline measured in the same run: the same files read and preprocessed one after the
other in this process (`process_file`, no Ray, nothing written).

    python benchmarks/prepare_corpus_throughput.py --kind ecg --recordings 256
    python benchmarks/prepare_corpus_throughput.py --kind eeg --recordings 16 --seconds 360
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from physiofm.data import prepare_corpus, synthetic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("ecg", "eeg"), default="ecg")
    parser.add_argument("--recordings", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=None, help="EEG recording length (default 360 s)")
    parser.add_argument("--files-per-commit", type=int, default=None)
    parser.add_argument("--files-per-task", type=int, default=16)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per read/preprocess task")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="physiofm-bench-"))
    started = time.perf_counter()
    if args.kind == "ecg":
        synthetic.write_ptbxl(root / "raw", n_records=args.recordings)
        preset = "ecg"
    else:
        synthetic.write_tueg(root / "raw", n_subjects=args.recordings, duration_s=args.seconds or 360.0)
        preset = "cbramod-eeg"
    written = time.perf_counter() - started
    from physiofm.data import storage
    from physiofm.data.pipeline import list_inputs, process_file
    from physiofm.data.presets import get_preset

    items, _ = list_inputs([str(root / "raw")])
    started = time.perf_counter()
    for item in items:
        process_file(item, get_preset(preset), storage.RetryPolicy(), {})
    baseline_files_per_s = len(items) / (time.perf_counter() - started)
    summary = prepare_corpus([str(root / "raw")], str(root / "out"), preset=preset,
                             files_per_commit=args.files_per_commit,
                             files_per_task=args.files_per_task, num_cpus=args.num_cpus)
    print(json.dumps({"kind": args.kind, "recordings": args.recordings, "corpus_written_s": round(written, 2),
                      **{k: summary[k] for k in ("files", "ok", "windows", "hours", "seconds", "files_per_s",
                                                 "windows_per_s", "mib_per_s")},
                      "baseline_files_per_s": round(baseline_files_per_s, 2),
                      "ratio_to_baseline": round(summary["files_per_s"] / baseline_files_per_s, 3)}, indent=2))


if __name__ == "__main__":
    main()
