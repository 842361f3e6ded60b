"""Training throughput of the platform against a plain single-process torch loop, same run.

The baseline trains the same encoder and objective on the same windows held in memory, with
torch.optim.AdamW and no Ray, DeepSpeed or streaming: the cost of pure compute. Each platform
configuration then trains through Ray Train + DeepSpeed, streaming the Parquet shards; the
report gives samples/s, the ratio to the baseline, and the share of step time spent waiting for
input, over the last logging window of the run (steady state, start-up excluded).

    python benchmarks/train_throughput.py                        # ECG windows (12, 10, 200)
    python benchmarks/train_throughput.py --layers 12 --steps 40 --configs 1:0 2:2 2:3
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch


def baseline(windows: torch.Tensor, masks: torch.Tensor | None, layers: int, batch: int, steps: int) -> float:
    from physiofm.encoders import CBraMod
    from physiofm.objectives import MaskedReconstruction

    torch.manual_seed(0)
    objective = MaskedReconstruction(CBraMod(n_layer=layers), 0.5, 0.25)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, weight_decay=0.05)
    warmup = 2
    for step in range(steps + warmup):
        if step == warmup:
            started = time.perf_counter()
        index = torch.randint(0, len(windows), (batch,))
        batch_dict = {"x": windows[index]}
        if masks is not None:
            batch_dict["channel_mask"] = masks[index]
        loss, _ = objective(batch_dict)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def platform(corpus: str, workers: int, stage: int, layers: int, batch: int, steps: int, root: Path) -> dict:
    from physiofm.platform.config import TrainConfig
    from physiofm.platform.trainer import pretrain

    lines: list[str] = []
    cfg = TrainConfig.from_dict({
        "method": {"name": "masked_reconstruction", "modality": "ecg", "inter_ratio": 0.25,
                   "encoder": {"n_layer": layers}},
        "data": {"corpus": corpus, "batch_size": batch // workers},
        "run": {"name": f"w{workers}-z{stage}", "storage": str(root / "runs"), "max_steps": steps,
                "checkpoint_every": steps, "log_every": max(1, steps // 4), "zero_stage": stage},
        "scaling": {"num_workers": workers}})
    summary = pretrain(cfg, log=lines.append)
    return {"samples_per_s": summary.samples_per_s, "input_wait_share": summary.input_wait_share,
            "global_step": summary.global_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=96, help="synthetic 10-s 12-lead records (one window each)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (split over the workers)")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--configs", nargs="+", default=["1:0", "2:2"], help="WORKERS:ZERO_STAGE entries")
    args = parser.parse_args()

    import ray

    from physiofm.data import prepare_corpus, read_windows
    from physiofm.data.synthetic import write_ptbxl

    root = Path(tempfile.mkdtemp(prefix="physiofm-train-bench-"))
    write_ptbxl(root / "raw", n_records=args.records, seed=0)
    ray.init(address="local", log_to_driver=False)
    prepare_corpus([str(root / "raw")], str(root / "windows"), preset="ecg", progress=lambda _: None)
    data = read_windows(str(root / "windows"), columns=["x", "channel_mask"])
    windows, masks = torch.from_numpy(data["x"]), torch.from_numpy(data["channel_mask"])

    reference = baseline(windows, masks, args.layers, args.batch_size, args.steps)
    results = {"baseline (1 process, in-memory, torch AdamW)": {"samples_per_s": round(reference, 2), "ratio": 1.0}}
    for entry in args.configs:
        workers, stage = (int(v) for v in re.split(r"[:,]", entry))
        measured = platform(str(root / "windows"), workers, stage, args.layers, args.batch_size, args.steps, root)
        results[f"platform {workers} worker(s), ZeRO-{stage}"] = {
            "samples_per_s": round(measured["samples_per_s"], 2),
            "ratio": round(measured["samples_per_s"] / reference, 3),
            "input_wait_share": round(measured["input_wait_share"], 3)}
    print(json.dumps({"layers": args.layers, "global_batch": args.batch_size, "steps": args.steps,
                      "cpus": ray.cluster_resources().get("CPU"), "results": results}, indent=1))


if __name__ == "__main__":
    main()
