"""Per-step cost of DeepSpeed's engine against the plain PyTorch loop, in one process, in CPU seconds.

Both train the same objective (`masked_reconstruction`, CBraMod) on the same in-memory windows at
the same torch threads: the plain side with torch AdamW, clipping and the LR schedule by hand, the
other through `deepspeed.initialize` (ZeRO stage `--zero`, world size 1, gloo) exactly as the
platform's loop builds it. Blocks of steps alternate between the two sides, and each side is timed
in process CPU seconds as well as wall seconds: on a machine shared with other work, CPU time per
step is what stays comparable (wall time mostly measures the other work).

    python benchmarks/train_step_overhead.py                     # 12 layers, batch 16, 1 thread
    python benchmarks/train_step_overhead.py --layers 4 --steps 4 --blocks 3
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.report import emit  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12, help="CBraMod layers (default 12)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides (default 1)")
    parser.add_argument("--zero", type=int, default=0, choices=(0, 1, 2), help="ZeRO stage of the engine side")
    parser.add_argument("--steps", type=int, default=8, help="steps per block (default 8)")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks per side (default 3)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args(argv)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.set_num_threads(args.threads)

    import deepspeed

    from physiofm.platform import train_loop
    from physiofm.platform.config import TrainConfig

    cfg = TrainConfig.from_dict({
        "method": {"name": "masked_reconstruction", "modality": "eeg", "encoder": {"n_layer": args.layers}},
        "data": {"corpus": "in-memory", "batch_size": args.batch_size},
        "run": {"max_steps": 10**6, "zero_stage": args.zero}})
    windows = torch.randn(64, 19, 30, 200)
    deepspeed.init_distributed(dist_backend="gloo")
    plain_objective = cfg.method.build(seed=0)
    plain_optimizer, plain_schedule = train_loop.build_optimizer(plain_objective, cfg)
    objective = cfg.method.build(seed=0)
    optimizer, schedule = train_loop.build_optimizer(objective, cfg)
    engine, _, _, _ = deepspeed.initialize(
        model=objective, optimizer=optimizer, lr_scheduler=schedule, dist_init_required=False,
        config=train_loop.deepspeed_config(cfg, train_loop.deepspeed_template(args.zero), use_gpu=False))
    generator = torch.Generator().manual_seed(0)
    parts = {"forward": 0.0, "backward": 0.0, "step": 0.0}

    def plain(steps: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            index = torch.randint(0, len(windows), (args.batch_size,), generator=generator)
            plain_objective.reseed(1)
            loss, _ = plain_objective({"x": windows[index]})
            plain_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain_objective.parameters(), cfg.optim.grad_clip)
            plain_optimizer.step()
            plain_schedule.step()
        return time.perf_counter() - wall, time.process_time() - cpu

    def with_engine(steps: int) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            index = torch.randint(0, len(windows), (args.batch_size,), generator=generator)
            engine.module.reseed(1)
            a = time.process_time()
            loss, _ = engine({"x": windows[index]})
            b = time.process_time()
            engine.backward(loss)
            c = time.process_time()
            engine.step()
            parts["forward"] += b - a
            parts["backward"] += c - b
            parts["step"] += time.process_time() - c
        return time.perf_counter() - wall, time.process_time() - cpu

    plain(2), with_engine(2)  # warm-up: first-call allocations, gloo
    parts.update(dict.fromkeys(parts, 0.0))
    totals = {"plain": [0.0, 0.0], "engine": [0.0, 0.0]}
    for _ in range(args.blocks):
        for side, run in (("plain", plain), ("engine", with_engine)):
            wall, cpu = run(args.steps)
            totals[side][0] += wall
            totals[side][1] += cpu
    steps = args.steps * args.blocks
    report = {
        "benchmark": "train_step_overhead", "layers": args.layers, "batch": args.batch_size,
        "threads": args.threads, "zero_stage": args.zero, "steps_per_side": steps,
        "plain_cpu_s_per_step": round(totals["plain"][1] / steps, 4),
        "engine_cpu_s_per_step": round(totals["engine"][1] / steps, 4),
        "plain_over_engine_cpu": round(totals["plain"][1] / totals["engine"][1], 4),
        "plain_over_engine_wall": round(totals["plain"][0] / totals["engine"][0], 4),
        "engine_cpu_s_per_step_parts": {k: round(v / steps, 4) for k, v in parts.items()},
        "load_avg_1min": round(os.getloadavg()[0], 2)}
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
