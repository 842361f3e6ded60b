"""A corpus of good recordings plus memory bombs: every bomb rejected with a short reason, the good
files committed, and the peak memory of one worker bounded (target < 2 GiB).

Bombs, as an audit measured them (what each once cost one worker): EDFs whose data records
declare 3000 s, 20000 s and 1e8 s (0.08 Hz ... upsampled to 200 Hz: 3.7 GiB, 6 GiB, 30 GiB), a
DEAP pickle calling `numpy.ndarray((1, 40, 5e6))` (4.7 GiB of uninitialised memory), one calling
`bytearray(2 GiB)`, one whose key is a tuple nested 25 times (a 100-million-character reason), a
2-MB zlib-compressed SEED `.mat` inflating to 2 GiB, a SEED `label.mat` of 4 million labels (a
30-MB reason), a WFDB master naming one segment 8000 times (100 s of CPU). Baseline, measured in
the same run on the same Ray: the good files alone. Reported: wall time and peak single-worker
resident memory of both runs (and their ratios), and each bomb's reason code and reason.

    python benchmarks/hostile_corpus.py                 # 8 six-minute EDFs + one of 85 min (57 MB), the bombs
    python benchmarks/hostile_corpus.py --quick         # 2 EDFs, the bombs
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402

from benchmarks.memory import PeakRSS  # noqa: E402


def write_bombs(folder: Path, edf: Path) -> dict[str, str]:
    """{bomb file: what it is} in `folder`, EDF bombs made from the good `edf`."""
    from physiofm.data import bad_files

    folder.mkdir(parents=True, exist_ok=True)
    bombs = {}
    for seconds in (3000, 20000, 99999999):
        path = bad_files.stretched_edf(edf, folder / f"stretched_{seconds}s.edf", seconds)
        bombs[str(path)] = f"EDF, records of {seconds} s"
    bombs[str(bad_files.deap_uninitialised(folder / "s91.dat"))] = "DEAP pickle: numpy.ndarray((1, 40, 5e6))"
    bombs[str(bad_files.deap_allocating_builtin(folder / "s92.dat"))] = "pickle: bytearray(2 GiB)"
    bombs[str(bad_files.deap_nested_key(folder / "s93.dat"))] = "DEAP pickle: a key nested 25 times"
    bombs[str(bad_files.mat_zlib_bomb(folder / "seed" / "djc_20140101.mat", inflated_mib=2048))] = (
        "SEED .mat: 2 GiB of zlib-compressed zeros")
    bombs[str(bad_files.seed_label_bomb(folder / "seed_labels", values=4_000_000))] = (
        "SEED session whose label.mat holds 4 million labels")
    bombs[str(bad_files.wfdb_repeated_segments(folder / "wfdb", repeats=8000))] = (
        "WFDB master naming one segment 8000 times")
    return bombs


def run(inputs: list[str], output: Path) -> tuple[dict, PeakRSS]:
    from physiofm.data import prepare_corpus

    with PeakRSS(interval_s=0.02) as memory:
        summary = prepare_corpus(inputs, str(output), preset="cbramod-eeg", progress=lambda _: None)
    return summary, memory


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=8, help="six-minute EDFs among the good files")
    parser.add_argument("--quick", action="store_true", help="2 EDFs, no long one")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)

    import ray

    from physiofm.data import read_manifest, synthetic

    root = Path(tempfile.mkdtemp(prefix="physiofm-hostile-bench-"))
    good = root / "good"
    recordings = 2 if args.quick else args.recordings
    edfs = synthetic.write_tueg(good / "tueg", n_subjects=recordings, duration_s=360.0, sfreq=250.0, seed=0)
    if not args.quick:  # a legitimate large file: 85 min, 22 signals, 57 MB
        synthetic.write_tueg(good / "long", n_subjects=1, duration_s=85 * 60.0, sfreq=250.0, seed=1)
    bombs = write_bombs(root / "bombs", edfs[0])
    owned = not ray.is_initialized()
    if owned:
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, log_to_driver=False, **({"include_dashboard": False} if address == "local" else {}))
    load_before = os.getloadavg()[0]
    baseline, baseline_memory = run([str(good)], root / "out-good")
    hostile, hostile_memory = run([str(good), str(root / "bombs")], root / "out-hostile")
    manifest = read_manifest(str(root / "out-hostile")).set_index("path")
    reasons = {what: {"reason_code": manifest.loc[path, "reason_code"], "reason": manifest.loc[path, "reason"],
                      "bytes": int(manifest.loc[path, "bytes"]), "seconds": round(float(manifest.loc[path, "seconds"]), 3)}
               for path, what in bombs.items()}
    good_rows = manifest.drop(index=list(bombs))
    report = {
        "benchmark": "hostile_corpus", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores", "cpus": ray.cluster_resources().get("CPU"),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "good_files": int(len(good_rows)), "good_ok": int((good_rows.status == "ok").sum()),
        "bombs": len(bombs), "bombs_rejected": sum(r["reason_code"] not in ("", None) for r in reasons.values()),
        "longest_reason_chars": int(manifest.reason.str.len().max()),
        "baseline": {"seconds": baseline["seconds"], "windows": baseline["windows"],
                     "peak_worker_rss_mib": baseline_memory.mib("worker"),
                     "peak_workers_rss_mib": baseline_memory.mib("workers")},
        "hostile": {"seconds": hostile["seconds"], "windows": hostile["windows"],
                    "peak_worker_rss_mib": hostile_memory.mib("worker"),
                    "peak_workers_rss_mib": hostile_memory.mib("workers")},
        "reasons": reasons,
    }
    report["ratios"] = {
        "seconds": round(hostile["seconds"] / baseline["seconds"], 3) if baseline["seconds"] else None,
        "peak_worker_rss": round(hostile_memory.worker / baseline_memory.worker, 3) if baseline_memory.worker else None}
    if owned:
        ray.shutdown()
    emit(report, args.json)
    shutil.rmtree(root, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
