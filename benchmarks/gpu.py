"""CBraMod pretraining on one accelerator: bf16 step time, samples/s, model-FLOPs utilisation (MFU),
and whether the input pipeline keeps up with the steps. Runs on a GPU when there is one, on the CPU
otherwise (so that it is tested everywhere; a CPU has no published bf16 peak, so its MFU needs
--peak-tflops).

FLOPs per step are counted by `torch.utils.flop_counter.FlopCounterMode` over one forward and
backward pass (matmuls, convolutions, attention); MFU = counted FLOPs x steps/s / the device's
dense bf16 peak. The input side streams the same windows from Parquet shards through Ray Data
(`read_parquet` -> `iter_torch_batches` onto the device), as the training loop does.

    python benchmarks/gpu.py                          # 12-layer CBraMod, (19, 30, 200) windows
    python benchmarks/gpu.py --batch-size 256 --steps 50
    python benchmarks/gpu.py --quick                  # small model, a few steps: figures produced
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX A6000": 155.0, "V100": 125.0}


def device_and_peak(peak_tflops: float | None) -> tuple[torch.device, str, float | None]:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        return torch.device("cuda"), name, peak
    return torch.device("cpu"), platform.processor() or platform.machine(), peak_tflops


def build(layers: int, device: torch.device):
    from physiofm.encoders import CBraMod
    from physiofm.objectives import MaskedReconstruction

    torch.manual_seed(0)
    objective = MaskedReconstruction(CBraMod(n_layer=layers), 0.5).to(device)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, weight_decay=0.05,
                                  fused=device.type == "cuda")
    return objective, optimizer


def train_step(objective, optimizer, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
        loss, _ = objective({"x": x})
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
    optimizer.step()
    return loss


def flops_per_step(objective, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
            loss, _ = objective({"x": x})
        loss.backward()
    objective.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(objective, optimizer, x: torch.Tensor, warmup: int, steps: int) -> float:
    """Seconds per optimizer step (bf16 autocast, clipping, AdamW), after `warmup` steps."""
    for _ in range(warmup):
        train_step(objective, optimizer, x)
    synchronize(x.device)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(objective, optimizer, x)
    synchronize(x.device)
    return (time.perf_counter() - started) / steps


def write_shards(folder: Path, windows: int, shape: tuple[int, ...]) -> None:
    """Random windows as the pipeline's Parquet shards (same tensor column type)."""
    import pyarrow.fs as pafs

    from physiofm.data.shards import ShardWriter, new_prefix

    rng = np.random.default_rng(0)
    writer = ShardWriter(pafs.LocalFileSystem(), str(folder), new_prefix(), 128 * 2**20, 32 * 2**20)
    for start in range(0, windows, 64):
        n = min(64, windows - start)
        writer.add({"x": rng.standard_normal((n, *shape), dtype=np.float32), "window_index": np.arange(n)})
    writer.close()


def input_samples_per_s(folder: Path, batch: int, device: torch.device, epochs: int) -> float:
    """Windows per second that Ray Data streams from the shards onto the device, as in training."""
    import ray

    if not ray.is_initialized():  # a running Ray (a test session's) is used as it is
        address = os.environ.get("RAY_ADDRESS") or "local"
        ray.init(address=address, log_to_driver=False, **({"include_dashboard": False} if address == "local" else {}))
    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.read_parquet(str(folder), columns=["x"])
    count, started = 0, time.perf_counter()
    for _ in range(epochs):
        for item in dataset.iter_torch_batches(batch_size=batch, device=str(device), drop_last=True,
                                               prefetch_batches=2, local_shuffle_buffer_size=4 * batch):
            count += len(item["x"])
    synchronize(device)
    return count / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12, help="CBraMod layers (default 12, the official model)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per step (default 128 on GPU, 8 on CPU)")
    parser.add_argument("--channels", type=int, default=19)
    parser.add_argument("--patches", type=int, default=30, help="1-s patches per window (default 30)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: known GPUs)")
    parser.add_argument("--no-input", action="store_true", help="skip the input-pipeline measurement")
    parser.add_argument("--quick", action="store_true", help="2 layers, batch 4, 3 steps, 64 windows of input")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.batch_size, args.steps, args.warmup, args.patches = 2, 4, 3, 1, 10

    device, name, peak = device_and_peak(args.peak_tflops)
    batch = args.batch_size or (128 if device.type == "cuda" else 8)
    if device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    objective, optimizer = build(args.layers, device)
    x = torch.randn(batch, args.channels, args.patches, 200, device=device)
    flops = flops_per_step(objective, x)
    step_s = time_steps(objective, optimizer, x, args.warmup, args.steps)
    samples_per_s = batch / step_s
    report = {
        "device": f"{device.type}: {name}", "torch": torch.__version__, "precision": "bf16 autocast",
        "layers": args.layers, "window": [args.channels, args.patches, 200], "batch": batch,
        "parameters": sum(p.numel() for p in objective.parameters()),
        "step_ms": round(1000 * step_s, 2), "samples_per_s": round(samples_per_s, 2),
        "model_gflops_per_step": round(flops / 1e9, 3), "achieved_tflops": float(f"{flops / step_s / 1e12:.4g}"),
        "peak_bf16_tflops": peak, "mfu": float(f"{flops / step_s / (peak * 1e12):.4g}") if peak else None,
    }
    if device.type == "cuda":
        report["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if not args.no_input:
        with tempfile.TemporaryDirectory(prefix="physiofm-gpu-bench-") as folder:
            windows = max(64, 4 * batch) if args.quick else max(2048, 8 * batch)
            write_shards(Path(folder), windows, (args.channels, args.patches, 200))
            supplied = input_samples_per_s(Path(folder), batch, device, epochs=1 if args.quick else 2)
        report.update(input_samples_per_s=round(supplied, 2), input_keeps_up=supplied >= samples_per_s,
                      input_to_step_ratio=round(supplied / samples_per_s, 3))
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
