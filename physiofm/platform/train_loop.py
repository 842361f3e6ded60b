"""The one training loop: runs on every Ray Train worker, for every method.

Builds the method's objective from the config, wraps it with `deepspeed.initialize` (ZeRO stage
from `infra/deepspeed/`, AdamW with warm-up + cosine schedule, clipping, accumulation), streams
the worker's dataset shard, logs to TensorBoard and `ray.train.report`, and checkpoints on every
rank every K steps (each checkpoint also carries a consolidated export of the encoders).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from physiofm.platform.checkpoints import verify_local, write_manifest
from physiofm.platform.config import OptimConfig, TrainConfig
from physiofm.platform.console import quiet_training_worker
from physiofm.platform.export import export_encoders

logger = logging.getLogger("physiofm.train")  # Ray Train routes worker logs to the driver once
CHECKPOINT_TAG = "state"  # DeepSpeed tag inside each reported checkpoint directory
DEEPSPEED_KEY = "_deepspeed"  # the resolved DeepSpeed config travels beside the TrainConfig dict
TENSORBOARD_KEY = "_tensorboard_dir"  # where rank 0 writes event files (on its own node)
TENSORBOARD_SYNC_KEY = "_tensorboard_uri"  # remote copy refreshed at every checkpoint ("" = none)
THREADS_KEY = "_torch_threads"  # torch threads of each worker, from the CPUs it holds
SHARDS_KEY = "_worker_shards"  # datasets are per-worker shards named by `shard_name` (trainer.worker_shards)


def shard_name(dataset: str, rank: int) -> str:
    """Name of worker `rank`'s own shard of `dataset` among the datasets handed to Ray Train."""
    return f"{dataset}@{rank}"


def warmup_cosine(optim: OptimConfig, total_steps: int):
    """LR multiplier: linear warm-up, then cosine from lr down to min_lr at `total_steps`."""
    floor = optim.min_lr / optim.lr

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        span = max(1, total_steps - optim.warmup_steps)
        progress = min(1.0, (step - optim.warmup_steps) / span)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def quiet_report_echo() -> None:
    """Ray Train's workers echo every `ray.train.report` (the whole metrics dict, once per rank) at
    INFO on a logger named by its module's file, outside `ray.train`'s LoggingConfig; our own
    progress line says the same in one line. Raise that logger to WARNING."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: keep its logging as it is
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    # DeepSpeed's ZeRO calls a torch collective torch deprecates, once per step: not the user's concern
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    quiet_training_worker(bool(config.get("scaling", {}).get("use_gpu")))
    import deepspeed
    import ray.train
    import ray.train.torch

    config = dict(config)
    ds_config = config.pop(DEEPSPEED_KEY)
    tensorboard_dir = config.pop(TENSORBOARD_KEY, "")
    tensorboard_uri = config.pop(TENSORBOARD_SYNC_KEY, "")
    own_shards = bool(config.pop(SHARDS_KEY, False))
    threads = int(config.pop(THREADS_KEY, 0) or os.environ.get("OMP_NUM_THREADS", "1"))
    cfg = TrainConfig.from_dict(config)
    quiet_report_echo()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.run.seed + rank)
    torch.set_num_threads(max(1, threads))
    device = ray.train.torch.get_device()

    checkpoint = ray.train.get_checkpoint()
    initial = None
    if checkpoint is None and getattr(cfg.method, "init_from", ""):
        from physiofm.platform.methods import read_initial_weights

        initial = read_initial_weights(cfg.method.init_from)
        if rank == 0:
            logger.info(f"[physiofm] initialised from {cfg.method.init_from}")
    objective = cfg.method.build(seed=cfg.run.seed, initial_weights=initial)
    optimizer, scheduler = build_optimizer(objective, cfg)
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=objective, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config,
        dist_init_required=False)
    float_dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32

    resumed_from = ""
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            verify_local(directory)  # a damaged file is named here, not deep inside torch.load
            engine.load_checkpoint(directory, tag=CHECKPOINT_TAG)
        resumed_from = checkpoint.path
        if rank == 0:
            logger.info(f"[physiofm] resumed from checkpoint {checkpoint.path} at global_step={engine.global_steps}")

    writer = None
    if rank == 0 and (tensorboard_dir or tensorboard_uri):
        from torch.utils.tensorboard import SummaryWriter

        tensorboard_dir = tensorboard_dir or private_scratch(f"tensorboard-{cfg.run.name}")
        writer = SummaryWriter(tensorboard_dir)

    def dataset(name: str):
        return ray.train.get_dataset_shard(shard_name(name, rank) if own_shards else name)

    shard = dataset("train")
    validation = dataset("validation") if cfg.data.validation_fraction > 0 else None

    def batches(epoch: int):
        return shard.iter_torch_batches(
            batch_size=cfg.data.batch_size, drop_last=True, device=device,
            prefetch_batches=cfg.data.prefetch_batches,
            local_shuffle_buffer_size=cfg.data.shuffle_buffer or None,
            local_shuffle_seed=(cfg.run.seed + 7919 * epoch + rank) if cfg.data.shuffle_buffer else None)

    def report(metrics: dict) -> None:
        ray.train.report({**metrics, "torch_threads": torch.get_num_threads()})

    def save(report: dict, step: int) -> None:
        report["torch_threads"] = torch.get_num_threads()
        if validation is not None:
            report["val_loss"] = _validation_loss(engine, validation, cfg, float_dtype, device, rank, world)
            if rank == 0:
                logger.info(f"[physiofm] step {step} validation loss={report['val_loss']:.4f}")
        _save_and_report(engine, objective, report, rank, step, world)
        if writer is not None and tensorboard_uri:
            _upload_dir(tensorboard_dir, tensorboard_uri)

    run_steps(engine, cfg, batches, report=report, checkpoint=save, rank=rank, world=world,
              float_dtype=float_dtype, scheduler=scheduler, writer=writer, resumed_from=resumed_from)
    if writer is not None:
        writer.close()
        if tensorboard_uri:
            _upload_dir(tensorboard_dir, tensorboard_uri)
            shutil.rmtree(tensorboard_dir, ignore_errors=True)


def private_scratch(what: str) -> str:
    """A new temporary folder of this run on this node, readable by its owner only: scratch (e.g. event
    files for remote storage, uploaded at every checkpoint) never goes to a fixed folder that other
    runs or users of the host share."""
    return tempfile.mkdtemp(prefix=f"physiofm-{what}-")


def build_optimizer(objective: torch.nn.Module, cfg: TrainConfig):
    """AdamW over the objective's parameter groups (one group, or e.g. a backbone and a head with
    their own learning rates), with the warm-up + cosine schedule applied to every group."""
    optimizer = torch.optim.AdamW(objective.parameter_groups(cfg.optim.lr), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.optim, cfg.run.max_steps))


def run_steps(engine, cfg: TrainConfig, batches: Callable[[int], Iterable[dict]], *,
              report: Callable[[dict], None], checkpoint: Callable[[dict, int], None], rank: int = 0,
              world: int = 1, float_dtype: torch.dtype = torch.float32, scheduler=None, writer=None,
              resumed_from: str = "") -> None:
    """The one training loop, for every method and every engine (DeepSpeed on Ray Train workers,
    `LocalEngine` in a single process): epochs of `batches(epoch)` until `run.max_steps` optimizer
    steps, the objective reseeded every micro-step, a metrics report every `run.log_every` steps and
    `checkpoint(report, step)` every `run.checkpoint_every` steps and at the end."""
    start_step = engine.global_steps
    window = _Window()
    first_loss = math.nan
    epoch = 0
    while engine.global_steps < cfg.run.max_steps:
        epoch += 1
        batches_this_epoch = 0
        waited_since = time.perf_counter()
        for batch in batches(epoch):
            waited = time.perf_counter() - waited_since
            batches_this_epoch += 1
            batch = {k: v.to(float_dtype) if v.is_floating_point() else v for k, v in batch.items()}
            # Masks depend on (seed, rank, micro-step) only: ranks differ, resumed runs redraw the same.
            micro = engine.global_steps * cfg.optim.grad_accum + engine.micro_steps % cfg.optim.grad_accum
            engine.module.reseed(_draw_seed(cfg.run.seed, rank, micro))
            loss, metrics = engine(batch)
            engine.backward(loss)
            before = engine.global_steps
            engine.step()  # an optimizer step only at the end of each accumulation of micro-steps
            window.add(loss, metrics, len(next(iter(batch.values()))), waited)
            step = engine.global_steps
            stepped = step > before
            if stepped and math.isnan(first_loss):  # every micro-step of the first step, every rank, as reported
                first_loss = window.reduce(world)["loss"]
            done = step >= cfg.run.max_steps
            if stepped and (step % cfg.run.log_every == 0 or step % cfg.run.checkpoint_every == 0 or done):
                metrics_now = window.reduce(world)
                metrics_now.update(global_step=step, lr=scheduler.get_last_lr()[0] if scheduler else math.nan,
                                   epoch=epoch, first_loss=first_loss, start_step=start_step,
                                   resumed_from=resumed_from)
                if writer is not None:
                    for key in ("loss", "lr", "samples_per_s", "input_wait_share", *window.extra_keys):
                        writer.add_scalar(f"train/{key}", metrics_now[key], step)
                    writer.flush()
                if rank == 0:
                    logger.info(f"[physiofm] step {step}/{cfg.run.max_steps} loss={metrics_now['loss']:.4f} "
                                f"lr={metrics_now['lr']:.2e} samples/s={metrics_now['samples_per_s']:.1f} "
                                f"input-wait={100 * metrics_now['input_wait_share']:.0f}%")
                if step % cfg.run.checkpoint_every == 0 or done:
                    checkpoint(metrics_now, step)
                else:
                    report(metrics_now)
                window = _Window()
            waited_since = time.perf_counter()
            if done:
                break
        if batches_this_epoch == 0:
            raise RuntimeError(
                f"worker {rank} received no full batch of {cfg.data.batch_size} windows in epoch {epoch}: "
                f"the corpus is too small for {world} workers; lower data.batch_size or scaling.num_workers")


class LocalEngine:
    """The part of DeepSpeed's engine API that `run_steps` uses, for one process without DeepSpeed
    (small models whose start-up would dwarf their training, e.g. one fold of a fine-tuning
    protocol): forward, loss scaled by the accumulation, clipping, optimizer and schedule steps."""

    def __init__(self, module: torch.nn.Module, optimizer, scheduler, grad_accum: int = 1, grad_clip: float = 0.0):
        self.module, self.optimizer, self.scheduler = module, optimizer, scheduler
        self.grad_accum, self.grad_clip = grad_accum, grad_clip
        self.global_steps = 0
        self.micro_steps = 0
        self.module.train()

    def __call__(self, batch):
        return self.module(batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum:
            return
        if self.grad_clip > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_steps += 1

    def train(self, mode: bool = True) -> "LocalEngine":
        self.module.train(mode)
        return self

    def eval(self) -> "LocalEngine":
        return self.train(False)


def _validation_loss(engine, shard, cfg: TrainConfig, float_dtype, device, rank: int, world: int) -> float:
    """Mean objective loss over this worker's validation shard, averaged over workers.

    Masks are drawn from fixed seeds, so losses of successive checkpoints are comparable.
    """
    engine.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in shard.iter_torch_batches(batch_size=cfg.data.batch_size, drop_last=True, device=device):
            batch = {k: v.to(float_dtype) if v.is_floating_point() else v for k, v in batch.items()}
            engine.module.reseed(_draw_seed(cfg.run.seed, rank, -1 - count))
            loss, _ = engine(batch)
            total += float(loss.detach().float())
            count += 1
    engine.train()
    sums = torch.tensor([total, float(count)], dtype=torch.float64)
    if world > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    return float(sums[0] / sums[1]) if sums[1] > 0 else math.nan


def _upload_dir(local: str, uri: str) -> None:
    from physiofm.data import storage

    fs, path = storage.fsspec_filesystem(uri)
    for file in Path(local).rglob("*"):
        if file.is_file():
            target = f"{path}/{file.relative_to(local).as_posix()}"
            storage.retry(lambda f=file, t=target: fs.put_file(str(f), t), what=f"upload {file.name}")


def _draw_seed(seed: int, rank: int, micro_step: int) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(
        (seed * 1_000_003 + rank) * 1_000_000_007 + micro_step)).item())


def _save_and_report(engine, objective, report: dict, rank: int, step: int, world: int = 1) -> None:
    import deepspeed
    import ray.train

    with tempfile.TemporaryDirectory(prefix="physiofm-ckpt-") as directory:
        engine.save_checkpoint(directory, tag=CHECKPOINT_TAG)
        # ZeRO-3 partitions parameters: gather them (collectively) before rank 0 writes the export.
        with deepspeed.zero.GatheredParameters(list(objective.parameters()), modifier_rank=None):
            if rank == 0:
                export_encoders(objective, Path(directory) / "export")
                (Path(directory) / "metrics.json").write_text(json.dumps(report, indent=1, default=str))
        write_manifest(directory, rank, world, step)  # last: a checkpoint without all manifests is incomplete
        ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(directory),
                         checkpoint_dir_name=f"step_{step:08d}")


class _Window:
    """Metrics accumulated between two reports, averaged over steps and over workers.

    Values stay detached tensors on the device until a report: reading each one as a float
    would wait for the device on every micro-step.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.extras: dict[str, list[torch.Tensor]] = {}
        self.samples = 0
        self.waited = 0.0
        self.started = time.perf_counter()

    @property
    def extra_keys(self) -> list[str]:
        return sorted(self.extras)

    def add(self, loss: torch.Tensor, metrics: dict, samples: int, waited: float) -> None:
        self.losses.append(loss.detach())
        for key, value in metrics.items():
            self.extras.setdefault(key, []).append(torch.as_tensor(value).detach())
        self.samples += samples
        self.waited += waited

    def mean_loss(self) -> float:
        return _mean(self.losses)

    def reduce(self, world: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        keys = self.extra_keys
        local = torch.tensor([self.mean_loss(), self.samples / elapsed, self.waited / elapsed,
                              *[_mean(self.extras[k]) for k in keys]], dtype=torch.float64)
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.all_reduce(local)
            local /= world
        loss, rate, wait, *extra = local.tolist()
        out = {"loss": loss, "samples_per_s": rate * world, "input_wait_share": min(1.0, wait)}
        out.update(zip(keys, extra))
        return out


def _mean(values: list[torch.Tensor]) -> float:
    return float(torch.stack([v.float() for v in values]).mean()) if values else math.nan


def deepspeed_config(cfg: TrainConfig, template: dict[str, Any], use_gpu: bool) -> dict[str, Any]:
    """Fill a ZeRO template from `infra/deepspeed/` with the run's batch, accumulation and precision."""
    out = json.loads(json.dumps(template))
    out["train_micro_batch_size_per_gpu"] = cfg.data.batch_size
    out["gradient_accumulation_steps"] = cfg.optim.grad_accum
    out["gradient_clipping"] = cfg.optim.grad_clip
    out.setdefault("zero_optimization", {})["stage"] = cfg.run.zero_stage
    out["bf16"] = {"enabled": cfg.resolved_precision(use_gpu) == "bf16"}
    out.pop("fp16", None)  # fp16 is GPU-only and loses range on physiological amplitudes
    # A torch optimizer is passed in: DeepSpeed must not build its own (FusedAdam JIT-builds on CPU).
    out["zero_allow_untested_optimizer"] = True
    out.pop("optimizer", None)
    out.pop("scheduler", None)
    return out


def deepspeed_template(stage: int, override_path: str = "") -> dict[str, Any]:
    """The ZeRO config file of a stage: `infra/deepspeed/zero{stage}.json`, or a user file."""
    path = Path(override_path) if override_path else _infra_dir() / "deepspeed" / f"zero{stage}.json"
    if not path.is_file():
        raise FileNotFoundError(f"DeepSpeed config not found: {path}")
    return json.loads(path.read_text())


def _infra_dir() -> Path:
    return Path(os.environ.get("PHYSIOFM_INFRA", Path(__file__).resolve().parents[2] / "infra"))
