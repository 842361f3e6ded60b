"""Corpus preparation throughput: the published recipes' reference loops against physiofm, on the same
generated trees, in one run.

Three ways through the same files:
  reference   the loop of `reference_loops.py` in this process (one core): CBraMod's MNE loop for
              the TUEG-like EDF tree, a wfdb + scipy loop for the PTB-XL-like WFDB tree;
  per-file    physiofm's own per-file code (`process_file` + its shard writer) in this process;
  pipeline    `prepare_corpus` on a local Ray with `--cpus` CPUs (or the cluster of RAY_ADDRESS).
With `--ceiling`, also the per-file code in `--cpus` plain processes at once, each on its share of
the files (no Ray): what this machine gives independent processes, the ceiling of any pipeline on it.
For each: files/s, windows/s, MB/s of raw input, per core, and peak RSS (this process plus every
process it started: Ray's and the workers, sampled every 50 ms; the workers' alone for the
pipeline, since this process also holds the reference's windows for the comparison). The pipeline's fixed costs
(starting Ray, starting the workers) are reported apart from its processing throughput. Then
the windows of the pipeline are matched with the reference's by (file, window index): the same
set is required, and the relative RMS difference of the matching windows is reported.

    python benchmarks/prep_throughput.py                       # 32 x 600-s EDF at 256 Hz, 1024 ECG records
    python benchmarks/prep_throughput.py --kind eeg --copies 32 --no-reference --ceiling   # >= 60 s of per-file work
    python benchmarks/prep_throughput.py --kind eeg --copies 32 --no-reference --ceiling --per-file-threads 1
    python benchmarks/prep_throughput.py --quick               # tiny trees: figures produced, same windows
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402

from benchmarks.memory import PeakRSS  # noqa: E402
from benchmarks.reference_loops import cbramod_loop_file, ecg_loop_file  # noqa: E402

TOLERANCE = {"eeg": 0.02, "ecg": 1e-4}  # relative RMS a matching window may differ by


def generate(kind: str, root: Path, args) -> Path:
    """The generated tree, repeated `--copies` times as hard links under other folders (other files
    to every side, no generation cost)."""
    from benchmarks.prep_scaling import replicate
    from physiofm.data import synthetic

    folder = root / kind
    if not folder.exists():
        if kind == "eeg":
            synthetic.write_tueg(folder, n_subjects=args.eeg_files, duration_s=args.eeg_seconds, sfreq=args.eeg_sfreq)
        else:
            synthetic.write_ptbxl(folder, n_records=args.ecg_records)
    if args.copies == 1:
        return folder
    replicate(folder, root / f"{kind}-x{args.copies}", args.copies)
    return root / f"{kind}-x{args.copies}"


def rates(files: int, windows: int, nbytes: int, seconds: float, cores: float) -> dict:
    return {"seconds": round(seconds, 3), "files_per_s": round(files / seconds, 3),
            "windows_per_s": round(windows / seconds, 3), "mb_per_s": round(nbytes / 1e6 / seconds, 3),
            "files_per_s_per_core": round(files / seconds / cores, 3)}


def run_reference(kind: str, items) -> tuple[dict, dict]:
    loop = cbramod_loop_file if kind == "eeg" else ecg_loop_file
    loop(items[0].path)  # untimed: the libraries' lazy imports, as the other sides' worker start
    windows, count = {}, 0
    with PeakRSS() as memory:
        started, cpu = time.perf_counter(), time.process_time()
        for item in items:
            x, kept = loop(item.path)
            count += len(kept)
            windows.update(((item.path, int(i)), w) for i, w in zip(kept, x))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {**rates(len(items), count, sum(i.bytes for i in items), seconds, 1), "cpu_s": round(cpu, 3),
            "peak_rss_mib": memory.mib(), "windows": count}, windows


def run_per_file(kind: str, items, scratch: Path, threads: int | None = None, before_timing=None) -> dict:
    """`threads`: cap the native thread pools (OpenMP, BLAS, Arrow) at this many, as a pipeline
    worker holding that many CPUs is; None leaves the libraries' defaults (one per core).
    `before_timing()` is called once the imports are done, just before the clock starts."""
    import contextlib

    import pyarrow as pa
    import pyarrow.fs as pafs
    from threadpoolctl import threadpool_limits

    from physiofm.data import storage
    from physiofm.data.pipeline import process_file
    from physiofm.data.presets import get_preset
    from physiofm.data.shards import ShardWriter, new_prefix

    preset = get_preset("cbramod-eeg" if kind == "eeg" else "ecg")
    preset.prepare()  # as a pipeline worker does at its start
    import ray.data.block  # noqa: F401 - the shard writer's Arrow conversion: a worker has it imported before its first file
    count = 0
    arrow_threads = pa.cpu_count()
    if threads:
        pa.set_cpu_count(threads)
    if before_timing:
        before_timing()
    with PeakRSS() as memory, (threadpool_limits(threads) if threads else contextlib.nullcontext()):
        started_at = time.time()
        started, cpu = time.perf_counter(), time.process_time()
        writer = ShardWriter(pafs.LocalFileSystem(), str(scratch), new_prefix(), 128 * 2**20, 64 * 2**20)
        for item in items:
            batches, row = process_file(item, preset, storage.RetryPolicy(), {})
            count += row["n_windows"]
            for batch in batches:
                writer.add(batch)
        writer.close()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    pa.set_cpu_count(arrow_threads)
    return {**rates(len(items), count, sum(i.bytes for i in items), seconds, 1), "cpu_s": round(cpu, 3),
            "cores_used": round(cpu / seconds, 2), "threads": threads or "default",
            "peak_rss_mib": memory.mib(), "windows": count, "started_at": started_at}


def _per_file_share(kind: str, items, scratch: str, threads: int | None, ready, results) -> None:
    """One process of the ceiling: its share, timed once every process has done its imports."""
    figures = run_per_file(kind, items, Path(scratch), threads, before_timing=ready.wait)
    results.put((figures["started_at"], figures["started_at"] + figures["seconds"], figures["cpu_s"],
                 figures["windows"], figures["peak_rss_mib"]))


def run_parallel_per_file(kind: str, items, scratch: Path, processes: int, threads: int | None) -> dict:
    """The per-file code in `processes` plain processes started together, files dealt round-robin;
    timed from the first process's start to the last one's end (imports apart)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ready, results = context.Barrier(processes), context.Queue()
    shares = [items[i::processes] for i in range(processes)]
    procs = [context.Process(target=_per_file_share, args=(kind, share, str(scratch / f"p{i}"), threads, ready, results))
             for i, share in enumerate(shares)]
    for proc in procs:
        proc.start()
    done = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    seconds = max(end for _, end, *_ in done) - min(start for start, *_ in done)
    return {**rates(len(items), sum(d[3] for d in done), sum(i.bytes for i in items), seconds, processes),
            "processes": processes, "cpu_s": round(sum(d[2] for d in done), 3),
            "peak_rss_mib_per_process": max(d[4] for d in done), "windows": sum(d[3] for d in done)}


def run_pipeline(kind: str, folder: Path, output: Path, cpus: int, nbytes: int) -> tuple[dict, dict]:
    from physiofm.data import prepare_corpus, read_windows

    with PeakRSS() as memory:
        summary = prepare_corpus([str(folder)], str(output), preset="cbramod-eeg" if kind == "eeg" else "ecg",
                                 progress=lambda line: None)
    processing = summary["processing_s"] or summary["seconds"]
    figures = {"wall": rates(summary["files"], summary["windows"], nbytes, summary["seconds"], cpus),
               "processing": rates(summary["files"], summary["windows"], nbytes, processing, cpus),
               "fixed_costs_s": {"ray_start": summary["ray_start_s"], "workers_start": summary["workers_start_s"]},
               "peak_rss_mib": memory.mib(), "peak_worker_rss_mib": memory.mib("workers"), "windows": summary["windows"],
               "cpus": cpus}
    data = read_windows(str(output), columns=["x", "recording", "window_index"])
    windows = {(path, int(i)): x for path, i, x in zip(data["recording"], data["window_index"], data["x"])}
    return figures, windows


def compare(kind: str, ours: dict, reference: dict) -> dict:
    """Same windows? Keys must match; values within the recipe's tolerance (relative RMS)."""
    scale = 100.0 if kind == "eeg" else 1.0  # EEG windows are stored in units of 100 µV
    common = sorted(set(ours) & set(reference))
    errors = [float(np.sqrt(np.mean((ours[k] * scale - reference[k]) ** 2) / np.mean(reference[k] ** 2)))
              for k in common]
    squared = sum(float(np.sum((ours[k] * scale - reference[k]) ** 2)) for k in common)
    energy = sum(float(np.sum(reference[k] ** 2)) for k in common)
    return {"same_windows": set(ours) == set(reference), "windows_only_ours": len(set(ours) - set(reference)),
            "windows_only_reference": len(set(reference) - set(ours)), "matched": len(common),
            "relative_rms": float(np.sqrt(squared / energy)) if energy else None,
            "max_window_relative_rms": max(errors) if errors else None, "tolerance": TOLERANCE[kind]}


def benchmark(kind: str, root: Path, args) -> dict:
    from physiofm.data.pipeline import list_inputs

    folder = generate(kind, root, args)
    items, _ = list_inputs([str(folder)])
    load_before = os.getloadavg()
    reference, ref_windows = run_reference(kind, items) if args.reference else (None, {})
    per_file = run_per_file(kind, items, Path(tempfile.mkdtemp(prefix="per-file-", dir=root)), args.per_file_threads)
    parallel = (run_parallel_per_file(kind, items, Path(tempfile.mkdtemp(prefix="parallel-", dir=root)), args.cpus,
                                      args.per_file_threads) if args.ceiling else None)
    pipeline, our_windows = run_pipeline(kind, folder, Path(tempfile.mkdtemp(prefix="out-", dir=root)) / "corpus",
                                         args.cpus, sum(i.bytes for i in items))
    ratios = {"pipeline_vs_per_file": round(pipeline["processing"]["files_per_s"] / per_file["files_per_s"], 3),
              "pipeline_vs_per_file_wall": round(pipeline["wall"]["files_per_s"] / per_file["files_per_s"], 3)}
    if parallel:  # what independent processes reach on this machine, and the pipeline's share of it
        ratios["parallel_per_file_vs_per_file"] = round(parallel["files_per_s"] / per_file["files_per_s"], 3)
        ratios["pipeline_vs_parallel_per_file"] = round(pipeline["processing"]["files_per_s"] / parallel["files_per_s"], 3)
    if reference:
        ref_rate = reference["files_per_s_per_core"]
        ratios = {"pipeline_per_core_vs_reference": round(pipeline["processing"]["files_per_s_per_core"] / ref_rate, 3),
                  "pipeline_per_core_vs_reference_wall": round(pipeline["wall"]["files_per_s_per_core"] / ref_rate, 3),
                  "per_file_vs_reference": round(per_file["files_per_s"] / ref_rate, 3), **ratios}
    return {
        "files": len(items), "input_mb": round(sum(i.bytes for i in items) / 1e6, 1), "ratios": ratios,
        "reference": reference, "per_file": per_file, "parallel_per_file": parallel, "pipeline": pipeline,
        "windows": compare(kind, our_windows, ref_windows) if reference else None,
        "load_avg_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", nargs="+", choices=("eeg", "ecg"), default=["eeg", "ecg"])
    parser.add_argument("--eeg-files", type=int, default=32, help="TUEG-like EDF files (default 32)")
    parser.add_argument("--eeg-seconds", type=float, default=600.0, help="length of each (default 600 s)")
    parser.add_argument("--eeg-sfreq", type=float, default=256.0, help="their rate (default 256 Hz)")
    parser.add_argument("--ecg-records", type=int, default=1024, help="PTB-XL-like 10-s records (default 1024)")
    parser.add_argument("--copies", type=int, default=1, help="repeat each tree this many times (hard links), "
                                                                "e.g. for a corpus the per-file code takes >= 60 s on")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the reference loop (pipeline against its own per-file code only)")
    parser.add_argument("--ceiling", action="store_true",
                        help="also run the per-file code in --cpus plain processes at once (no Ray): the machine's "
                             "ceiling for any pipeline")
    parser.add_argument("--per-file-threads", type=int, default=None,
                        help="native threads of the per-file side (default: the libraries' own, one per core; "
                             "1: one core, as a pipeline worker holding one CPU)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray (default: all)")
    parser.add_argument("--data", help="folder for the generated trees (kept and reused; default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="2 EDF of 330 s and 16 ECG records")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.eeg_files, args.eeg_seconds, args.ecg_records = 2, 330.0, 16

    import ray

    root = Path(args.data or tempfile.mkdtemp(prefix="physiofm-prep-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=False,
             **({"num_cpus": args.cpus, "include_dashboard": False} if address == "local" else {}))
    ray_start = time.perf_counter() - started
    cpus = int(ray.cluster_resources().get("CPU", args.cpus))
    args.cpus = cpus
    report = {"benchmark": "prep_throughput", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}", "cpus": cpus,
              "ray_start_s": round(ray_start, 2), "quick": args.quick}
    for kind in args.kind:
        report[kind] = benchmark(kind, root, args)
    ray.shutdown()
    emit(report, args.json)
    failed = [k for k in args.kind if report[k]["windows"] and (not report[k]["windows"]["same_windows"]
              or (report[k]["windows"]["relative_rms"] or 0.0) > TOLERANCE[k])]
    if failed:
        raise SystemExit(f"the pipeline's windows differ from the reference's for {failed}")
    return report


if __name__ == "__main__":
    main()
