"""Corpus preparation against corpus size (x1, x4, x16): time must grow linearly, memory stay flat.

One generated tree of N recordings is the x1 corpus; the xk corpus holds k copies of it (hard
links under other folders: other files to the pipeline, no generation cost). Each is prepared on
the same local Ray (started once), from scratch; reported per size: wall time, processing time
(the workers' start apart), files/s, and the peak resident memory of the Ray workers (every
`ray::` process of the local Ray, sampled every 50 ms) and of the driver. Linear time means processing_s / k about
equal to x1's (`time_per_x1`); flat memory means a peak ratio near 1 against x1 (target < 1.5).

    python benchmarks/prep_scaling.py                        # ECG: 256 records x1, x4, x16
    python benchmarks/prep_scaling.py --kind eeg --recordings 8
    python benchmarks/prep_scaling.py --quick                # 8 ECG records, x1 and x4
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402

from benchmarks.memory import PeakRSS  # noqa: E402


def replicate(base: Path, target: Path, copies: int) -> None:
    """`copies` copies of the tree `base` under `target/copy{i}` (hard links where possible)."""
    for index in range(copies):
        destination = target / f"copy{index:03d}"
        if destination.exists():
            continue
        shutil.copytree(base, destination, copy_function=_link_or_copy)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("ecg", "eeg"), default="ecg")
    parser.add_argument("--recordings", type=int, default=None, help="x1 corpus size (default 256 ECG / 8 EEG)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--shard-mb", type=float, default=16.0, help="shard size (small: memory shows the shard)")
    parser.add_argument("--quick", action="store_true", help="8 ECG records, x1 and x4")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.kind, args.recordings, args.factors = "ecg", 8, [1, 4]
    recordings = args.recordings or (256 if args.kind == "ecg" else 8)

    import ray

    from physiofm.data import prepare_corpus, synthetic

    root = Path(tempfile.mkdtemp(prefix="physiofm-scaling-bench-"))
    base = root / "base"
    if args.kind == "ecg":
        synthetic.write_ptbxl(base, n_records=recordings, seed=0)
    else:
        synthetic.write_tueg(base, n_subjects=recordings, duration_s=360.0, sfreq=256.0, seed=0)
    owned = not ray.is_initialized()  # a running Ray (a test session's) is used as it is
    if owned:
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, log_to_driver=False, **({"include_dashboard": False} if address == "local" else {}))
    load_before = os.getloadavg()[0]
    sizes = {}
    for factor in args.factors:
        corpus = root / f"x{factor}"
        replicate(base, corpus, factor)
        with PeakRSS() as memory:
            summary = prepare_corpus([str(corpus)], str(root / f"out-x{factor}"), shard_mb=args.shard_mb,
                                     preset="ecg" if args.kind == "ecg" else "cbramod-eeg", progress=lambda _: None)
        sizes[f"x{factor}"] = {
            "files": summary["files"], "windows": summary["windows"], "seconds": summary["seconds"],
            "processing_s": summary["processing_s"], "workers_start_s": summary["workers_start_s"],
            "processing_files_per_s": summary["processing_files_per_s"],
            "peak_worker_rss_mib": memory.mib("workers"), "peak_driver_rss_mib": memory.mib("driver")}
    first = sizes[f"x{args.factors[0]}"]
    for factor in args.factors:
        size = sizes[f"x{factor}"]
        scale = factor / args.factors[0]
        size["time_per_x1"] = round(size["processing_s"] / scale / first["processing_s"], 3) if first["processing_s"] else None
        size["peak_worker_rss_ratio"] = (round(size["peak_worker_rss_mib"] / first["peak_worker_rss_mib"], 3)
                                         if first["peak_worker_rss_mib"] else None)
    report = {"benchmark": "prep_scaling", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} cores", "cpus": ray.cluster_resources().get("CPU"), "kind": args.kind,
              "x1_recordings": recordings, "shard_mb": args.shard_mb,
              "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "sizes": sizes}
    if owned:
        ray.shutdown()
    emit(report, args.json)
    shutil.rmtree(root, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
