"""Training throughput of the platform against a plain PyTorch loop at equal threads, same run.

The plain loop trains the same encoder and objective on the same windows held in memory: torch
AdamW, clipping, no Ray, DeepSpeed or streaming, `torch.set_num_threads(T)`. Each platform
configuration (WORKERS:ZERO_STAGE) trains through Ray Train + DeepSpeed, streaming the corpus's
Parquet shards; each worker runs as many torch threads as CPUs it holds, so a configuration is
compared with the plain loop at the same total threads (1 worker x T threads, or W workers x 1).
Reported: samples/s over the last logging window (steady state, start-up apart), the ratio to the
plain loop at those threads, and the share of step time spent waiting for input.

    python benchmarks/train_throughput.py                  # CBraMod 12 layers, EEG (19, 30, 200), batch 16
    python benchmarks/train_throughput.py --configs 1:0 1:2 2:0 2:2 --steps 40
    python benchmarks/train_throughput.py --quick          # 2 layers, ECG windows, a few steps
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402


def plain_loop(windows: torch.Tensor, masks: torch.Tensor | None, layers: int, batch: int, steps: int,
               threads: int, warmup: int = 2) -> float:
    """Samples/s of the same objective trained in this process on in-memory windows."""
    from physiofm.encoders import CBraMod
    from physiofm.objectives import MaskedReconstruction

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        objective = MaskedReconstruction(CBraMod(n_layer=layers), 0.5, 0.0 if masks is None else 0.25)
        optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, weight_decay=0.05)
        generator = torch.Generator().manual_seed(0)
        for step in range(steps + warmup):
            if step == warmup:
                started = time.perf_counter()
            index = torch.randint(0, len(windows), (batch,), generator=generator)
            inputs = {"x": windows[index]}
            if masks is not None:
                inputs["channel_mask"] = masks[index]
            loss, _ = objective(inputs)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
            optimizer.step()
        return steps * batch / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)


def platform(corpus: str, modality: str, workers: int, stage: int, threads: int, layers: int, batch: int,
             steps: int, root: Path) -> dict:
    from physiofm.platform.config import TrainConfig
    from physiofm.platform.trainer import pretrain

    method = {"name": "masked_reconstruction", "modality": modality, "encoder": {"n_layer": layers}}
    if modality == "ecg":
        method["inter_ratio"] = 0.25
    cfg = TrainConfig.from_dict({
        "method": method,
        "data": {"corpus": corpus, "batch_size": batch // workers},
        "run": {"name": f"w{workers}-z{stage}-t{threads}", "storage": str(root / "runs"), "max_steps": steps,
                "checkpoint_every": steps, "log_every": max(1, steps // 3), "zero_stage": stage},
        "scaling": {"num_workers": workers, "cpus_per_worker": float(threads) if workers == 1 else 0.0}})
    started = time.perf_counter()
    summary = pretrain(cfg, log=lambda line: None)
    return {"samples_per_s": summary.samples_per_s, "input_wait_share": summary.input_wait_share,
            "global_step": summary.global_step, "torch_threads": summary.torch_threads,
            "run_s": round(time.perf_counter() - started, 1)}


def make_corpus(root: Path, modality: str, recordings: int) -> str:
    from physiofm.data import prepare_corpus, synthetic

    raw = root / "raw"
    if modality == "eeg":
        synthetic.write_tueg(raw, n_subjects=recordings, duration_s=360.0, sfreq=256.0)
    else:
        synthetic.write_ptbxl(raw, n_records=recordings)
    prepare_corpus([str(raw)], str(root / "windows"), preset="cbramod-eeg" if modality == "eeg" else "ecg",
                   progress=lambda line: None)
    return str(root / "windows")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modality", choices=("eeg", "ecg"), default="eeg",
                        help="eeg: (19, 30, 200) TUEG-like windows; ecg: (12, 10, 200) PTB-XL-like")
    parser.add_argument("--recordings", type=int, default=None, help="synthetic recordings (default 32 EEG / 96 ECG)")
    parser.add_argument("--layers", type=int, default=12, help="CBraMod layers (default 12, the official model)")
    parser.add_argument("--batch-size", type=int, default=16, help="global batch (split over the workers)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--configs", nargs="+", default=["1:0", "1:2", "2:0", "2:2"],
                        help="WORKERS:ZERO_STAGE entries; 1 worker runs at --threads, W workers at 1 thread each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of a single worker (default 1)")
    parser.add_argument("--quick", action="store_true", help="2 layers, ECG windows, 6 steps, one 1:0 run")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.modality, args.recordings, args.layers, args.batch_size, args.steps = "ecg", 16, 2, 4, 6
        args.configs, args.threads = ["1:0"], 1
    recordings = args.recordings or (32 if args.modality == "eeg" else 96)

    import ray

    from physiofm.data import read_windows

    root = Path(tempfile.mkdtemp(prefix="physiofm-train-bench-"))
    address = os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, log_to_driver=False, **({"include_dashboard": True, "dashboard_host": "127.0.0.1"}
                                                        if address == "local" else {}))
    load_before = os.getloadavg()[0]
    corpus = make_corpus(root, args.modality, recordings)
    data = read_windows(corpus, columns=["x", "channel_mask"] if args.modality == "ecg" else ["x"])
    windows = torch.from_numpy(data["x"])
    masks = torch.from_numpy(data["channel_mask"]) if "channel_mask" in data else None
    plain: dict[int, float] = {}
    results = {}
    for entry in args.configs:
        workers, stage = (int(v) for v in re.split(r"[:,]", entry))
        threads = args.threads if workers == 1 else 1
        total = workers * threads
        if total not in plain:
            plain[total] = plain_loop(windows, masks, args.layers, args.batch_size, args.steps, total)
            results[f"plain loop, {total} thread(s)"] = {"samples_per_s": round(plain[total], 2), "ratio": 1.0}
        measured = platform(corpus, args.modality, workers, stage, threads, args.layers, args.batch_size,
                            args.steps, root)
        results[f"platform {workers} worker(s) x {threads} thread(s), ZeRO-{stage}"] = {
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in measured.items()},
            "ratio": round(measured["samples_per_s"] / plain[total], 3), "plain_threads": total}
    report = {"benchmark": "train_throughput", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "cpus": ray.cluster_resources().get("CPU"),
              "modality": args.modality, "window": list(windows.shape[1:]), "layers": args.layers,
              "global_batch": args.batch_size, "steps": args.steps, "windows": len(windows),
              "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "results": results}
    emit(report, args.json)
    ray.shutdown()
    return report


if __name__ == "__main__":
    main()
