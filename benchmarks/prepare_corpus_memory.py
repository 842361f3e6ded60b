"""Peak memory of corpus preparation against corpus size: it must follow the shard, not the corpus.

Prepares a small and a large synthetic corpus (same recordings, N and k·N of them) and samples,
every 50 ms, the resident memory of every Ray worker process and of the object store's
shared memory in use. Reports both peaks and their ratio large/small (≈ 1 when memory is
bounded by shards and recordings; ≈ k if it grew with the corpus).

    python benchmarks/prepare_corpus_memory.py --kind ecg --recordings 256 --factor 4
    python benchmarks/prepare_corpus_memory.py --kind eeg --recordings 8 --factor 4
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path


def worker_rss_mib(raylet_pid: int) -> float:
    import psutil

    total = 0
    for proc in psutil.Process(raylet_pid).children(recursive=True):
        try:
            if proc.name().startswith("ray::") or "default_worker" in " ".join(proc.cmdline()):
                total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def peak_during(run, raylet_pid: int) -> tuple[float, object]:
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], worker_rss_mib(raylet_pid))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = run()
    finally:
        done.set()
        thread.join()
    return peak[0], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=("ecg", "eeg"), default="ecg")
    parser.add_argument("--recordings", type=int, default=256)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--shard-mb", type=float, default=16.0)
    args = parser.parse_args()

    import ray

    from physiofm.data import prepare_corpus, synthetic

    root = Path(tempfile.mkdtemp(prefix="physiofm-mem-bench-"))
    sizes = {"small": args.recordings, "large": args.recordings * args.factor}
    for name, count in sizes.items():
        if args.kind == "ecg":
            synthetic.write_ptbxl(root / name, n_records=count, seed=0)
        else:
            synthetic.write_tueg(root / name, n_subjects=count, duration_s=360.0, seed=0)
    ray.init(address="local", log_to_driver=False)
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    preset = "ecg" if args.kind == "ecg" else "cbramod-eeg"
    report = {"kind": args.kind, "shard_mb": args.shard_mb}
    for name, count in sizes.items():
        peak, summary = peak_during(lambda n=name: prepare_corpus(
            [str(root / n)], str(root / f"{n}-out"), preset=preset, shard_mb=args.shard_mb,
            progress=lambda _: None), raylet)
        report[name] = {"recordings": count, "windows": summary["windows"],
                        "input_mib": round(sum(p.stat().st_size for p in (root / name).rglob("*")) / 2**20, 1),
                        "peak_worker_rss_mib": round(peak, 1)}
    report["peak_ratio_large_to_small"] = round(report["large"]["peak_worker_rss_mib"]
                                                / report["small"]["peak_worker_rss_mib"], 3)
    report["corpus_ratio"] = args.factor
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
