"""Driver side of a pretraining run: check everything, then hand the one loop to Ray Train.

`pretrain(cfg)` validates the corpus against the method before any worker starts (a corpus with
no windows, the wrong window shape, or too few windows for the workers fails here, by name),
prepares a raw corpus through the data pipeline when needed, connects to the cluster it runs in
(or starts a local Ray), runs `TorchTrainer`, and returns a `RunSummary`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable

from physiofm.data import storage
from physiofm.platform.checkpoints import CHECKPOINT_DIR, DAMAGED, recover_run
from physiofm.platform.cluster import check_workers_fit, reachable_cpus, wait_for_workers, worker_bundle
from physiofm.platform.commands import next_commands, relative, render_next
from physiofm.platform.config import ConfigError, TrainConfig
from physiofm.platform.console import say
from physiofm.platform.run_record import check_resume, write_record
from physiofm.platform.train_loop import (DEEPSPEED_KEY, SHARDS_KEY, TENSORBOARD_KEY, TENSORBOARD_SYNC_KEY, THREADS_KEY,
                                          deepspeed_config, deepspeed_template, shard_name, train_loop_per_worker)

Log = Callable[[str], None]


@dataclass
class RunSummary:
    name: str
    run_uri: str
    global_step: int
    start_step: int
    resumed_from: str
    first_loss: float
    last_loss: float
    samples_per_s: float
    input_wait_share: float
    val_loss: float
    checkpoint_uri: str
    export_uri: str
    tensorboard_uri: str
    exports: list[str]
    num_workers: int
    elapsed_s: float
    cbramod_export: bool = False  # encoder.pt is a CBraMod: CBraMod.from_pretrained reads it too
    torch_threads: int = 0  # torch threads each worker ran
    next: tuple[str, ...] = ()  # commands that continue from this run (physiofm.platform.commands)

    def render(self) -> str:
        resumed = (f"resumed from {self.resumed_from} (step {self.start_step})" if self.resumed_from
                   else "started from scratch")
        tensorboard = (f"tensorboard --logdir {self.tensorboard_uri} --host 127.0.0.1"
                       if not storage.is_remote(self.tensorboard_uri)
                       else f"copy {self.tensorboard_uri} locally, then tensorboard --logdir <copy> --host 127.0.0.1")
        lines = [
            "=" * 72,
            f"physiofm run '{self.name}' finished: global_step={self.global_step}",
            f"  {resumed}; {self.global_step - self.start_step} steps in this run on {self.num_workers} workers "
            f"({self.elapsed_s:.0f} s)",
            f"  loss {self.first_loss:.4f} (first step of this run) -> {self.last_loss:.4f} (last)"
            + (f"; validation loss {self.val_loss:.4f}" if self.val_loss == self.val_loss else ""),
            f"  throughput {self.samples_per_s:.1f} samples/s, input wait {100 * self.input_wait_share:.0f}% "
            f"of step time",
            f"  checkpoint   {self.checkpoint_uri}",
            f"  export       {self.export_uri}: {', '.join(self.exports) or 'none'}",
            "               load with physiofm.platform.export.load_encoder(<export>/<file>)"
            + (" or CBraMod.from_pretrained" if self.cbramod_export else ""),
            "  resume       run the same command with a larger --max-steps (same --output and --name)",
            f"  tensorboard  {tensorboard}",
            *render_next(list(self.next)),
            "=" * 72,
        ]
        return "\n".join(lines)


def connect_ray(address: str | None = None, log: Log = say, dashboard: bool = True) -> None:
    """Join the cluster a job was submitted to (RAY_ADDRESS), or start a local Ray.

    A local Ray gets its dashboard (unless `dashboard=False`: a job without Ray Train) on a free
    loopback port, named in `RAY_API_SERVER_ADDRESS` for its processes: Ray Train's placement-group
    cleaner asks that state API whether the controller lives, and without it picks (or fails on) any
    other Ray instance of the host.
    """
    import ray

    from physiofm.platform.console import RAY_LOG_LEVEL, local_ray_environment, quiet_driver, quiet_local_start

    if ray.is_initialized():
        return
    quiet_driver()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log(f"connecting to the Ray cluster at {address}")
        ray.init(address=address, log_to_driver=True, logging_level=RAY_LOG_LEVEL)
    else:
        os.environ.update(local_ray_environment())
        quiet_local_start()
        local: dict = {"include_dashboard": False}
        if dashboard:
            port = _free_port()
            os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
            local = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port}
        log("starting a local Ray" + (f", dashboard http://127.0.0.1:{local['dashboard_port']}" if dashboard else "")
            + " (set RAY_ADDRESS or --address to join a cluster)")
        ray.init(address="local", log_to_driver=True, logging_level=RAY_LOG_LEVEL, **local)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_corpus(cfg: TrainConfig, log: Log = say, address: str | None = None,
                   connect: Callable[[], None] | None = None) -> tuple[str, dict]:
    """(prepared corpus URI, its info); a raw corpus is prepared first through the data pipeline
    (`connect` joins the cluster once there is work for it)."""
    from physiofm.data.loader import corpus_info

    uri = cfg.data.corpus
    if not uri:
        raise ConfigError("data.corpus is empty: give a prepared windows URI or raw recordings (--corpus)")
    try:
        return uri, corpus_info(uri)
    except FileNotFoundError:
        pass  # no corpus.json: raw recordings, prepared just below
    except ValueError as err:  # a prepared corpus that holds no windows
        raise ConfigError(f"data.corpus: {err}") from err
    if not storage.exists(uri):
        raise ConfigError(f"data.corpus: nothing found at {uri!r}")
    from physiofm.data.pipeline import check_inputs, prepare_corpus

    try:
        check_inputs([uri])  # a folder without recordings fails here, by the name given, before Ray starts
    except ValueError as err:
        raise ConfigError(f"data.corpus: {err}") from err

    prepared = cfg.data.prepared_cache or storage.join(cfg.run.storage, cfg.run.name, "corpus")
    preset = cfg.data.preset or cfg.method.default_preset
    log(f"{uri} holds raw recordings: preparing windows with preset '{preset}' into {prepared}")
    # our Ray (before the pipeline would start one without worker logs), once there is work for it
    prepare_corpus([uri], prepared, preset=preset, progress=log, connect=connect or (lambda: connect_ray(address, log)),
                   plan_cpus=reachable_cpus)
    try:
        return prepared, corpus_info(prepared)
    except ValueError as err:
        raise ConfigError(f"data.corpus: {err}") from err


def check_corpus(cfg: TrainConfig, uri: str, info: dict) -> None:
    windows = int(info["counts"]["windows"])
    cfg.method.check_corpus({k: tuple(v["shape"]) for k, v in info.get("columns", {}).items()})
    needed = cfg.scaling.num_workers * cfg.data.batch_size
    if windows < needed:
        raise ConfigError(f"data.corpus {uri!r} has {windows} windows, fewer than one batch per worker "
                          f"(scaling.num_workers={cfg.scaling.num_workers} x data.batch_size="
                          f"{cfg.data.batch_size} = {needed})")


DATA_CPUS = 1.0  # what Ray Data's read and map tasks of the training stream ask for, one at a time


def worker_cpus(cfg: TrainConfig, log: Log = say) -> float:
    """CPUs per training worker. Auto (0): 1, unless the workers would then hold every CPU of the
    cluster: Ray Data's read tasks would never be scheduled and training would wait forever. An
    explicit `scaling.cpus_per_worker` that leaves Ray Data less than `DATA_CPUS` is refused."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 0.0))
    workers = cfg.scaling.num_workers
    asked = cfg.scaling.cpus_per_worker
    if asked > 0:
        left = total - asked * workers
        if total and left < DATA_CPUS:
            fits = (total - DATA_CPUS) / workers
            advice = (f"use --cpus-per-worker {fits:g} ({worker_threads(fits)} torch thread(s) per worker) or fewer "
                      "workers" if fits > 0 else "add CPUs to the cluster")
            raise ConfigError(
                f"scaling.cpus_per_worker={asked:g} x scaling.num_workers={workers} = {asked * workers:g} CPUs of the "
                f"cluster's {total:g} leaves {max(left, 0.0):g} for Ray Data's read tasks, which need {DATA_CPUS:g}: "
                f"training would wait forever for its data; {advice}")
        return asked
    if total - workers >= DATA_CPUS or total == 0.0:
        return 1.0
    share = max(0.25, round((total - DATA_CPUS) / workers, 2))
    log(f"{workers} workers on {total:g} CPUs: {share:g} CPU per worker, leaving room for Ray Data")
    return share


def check_workers(cfg: TrainConfig, log: Log = say) -> dict:
    """{"cpus", "bundle"} of one training worker, after refusing a request the cluster (its nodes and
    its autoscaler's node types) can never meet."""
    cpus = worker_cpus(cfg, log)
    scaling = cfg.scaling
    bundle = worker_bundle(cpus, scaling.use_gpu, scaling.gpus_per_worker, scaling.resources_per_worker,
                           scaling.memory_per_worker_gib)
    key = ("scaling.use_gpu" if scaling.use_gpu else "scaling.resources_per_worker" if scaling.resources_per_worker
           else "scaling.memory_per_worker_gib" if scaling.memory_per_worker_gib else "scaling.num_workers")
    check_workers_fit(scaling.num_workers, bundle, key=key)
    return {"cpus": cpus, "bundle": bundle}


def worker_threads(cpus: float) -> int:
    """Torch threads of a worker holding `cpus` CPUs: as many as its CPUs, a fraction rounding up
    (Ray's own OMP_NUM_THREADS rounds down: 1.5 CPUs would run 1 thread)."""
    return max(1, math.ceil(cpus - 1e-9))


def ingest_config(split: bool = True):
    """Ray Train's default ingest options, stated: its own default copies the deprecated
    `exclude_resources` field, which warns in every run. `split=False`: the datasets are the
    workers' own shards already (`worker_shards`), handed over as they are."""
    import ray.train
    from ray.data import DataContext, ExecutionOptions

    current = DataContext.get_current().execution_options
    return ray.train.DataConfig(datasets_to_split="all" if split else [], execution_options=ExecutionOptions(
        resource_limits=current.resource_limits, preserve_order=current.preserve_order,
        verbose_progress=current.verbose_progress))


def worker_shards(datasets: dict, num_workers: int) -> dict:
    """Datasets held in memory, cut once into one equal shard per worker ("train@0", "train@1", ...).

    Each worker then iterates blocks already in the object store: no split coordinator actor (a
    process of its own, started for every run, and a barrier and a new execution at every epoch:
    ~3 s before the first batch and ~0.5 s per epoch on 2 cores). Equal shards, as Ray's
    `streaming_split(equal=True)` gives: every rank runs the same number of steps."""
    from ray.data.dataset import MaterializedDataset

    shards = {}
    for name, ds in datasets.items():
        held = ds if isinstance(ds, MaterializedDataset) else ds.materialize()  # e.g. the method's column selection
        for rank, shard in enumerate(held.split(num_workers, equal=True)):
            shards[shard_name(name, rank)] = shard
    return shards


def corpus_mib(info: dict, columns: list[str]) -> float:
    """MiB of the tensor `columns` over every window of a prepared corpus, from its corpus.json
    (plus 64 bytes per window for each metadata column streamed)."""
    import numpy as np

    specs = info.get("columns", {})
    per_window = sum(math.prod(specs[c]["shape"]) * np.dtype(specs[c]["dtype"]).itemsize if c in specs else 64
                     for c in columns)
    return int(info["counts"]["windows"]) * per_window / 2**20


def hold_in_memory(datasets: dict, cfg: TrainConfig, info: dict, columns: list[str]) -> dict | None:
    """The datasets read once into Ray's object store when the corpus is small (`data.in_memory_mb`,
    and a quarter of the store at most), else None: each epoch then streams from memory instead of
    re-reading the corpus and restarting the stream (about 2 s per epoch on 2 cores)."""
    import ray
    from ray.data.dataset import MaterializedDataset

    if cfg.data.in_memory_mb <= 0:
        return None
    store_mib = float(ray.cluster_resources().get("object_store_memory", 0.0)) / 2**20
    limit = min(cfg.data.in_memory_mb, 0.25 * store_mib) if store_mib else cfg.data.in_memory_mb
    if corpus_mib(info, columns) > limit:
        return None
    return {name: ds if isinstance(ds, MaterializedDataset) else ds.materialize()
            for name, ds in datasets.items()}


def existing_checkpoints(run_uri: str) -> list[str]:
    fs, path = storage.fsspec_filesystem(run_uri)
    if not fs.exists(path):
        return []
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False) if CHECKPOINT_DIR.match(p.rsplit("/", 1)[-1]))


def tensorboard_locations(storage_uri: str, name: str) -> tuple[str, str]:
    """(where rank 0 writes event files, where they end up). On remote storage the first is "": rank
    0 writes into a private temporary folder of its own (`train_loop.private_scratch`), uploaded at
    every checkpoint; never a fixed folder of the system's temporary directory shared by its users."""
    if storage.is_remote(storage_uri):
        return "", storage.join(storage_uri, name, "tensorboard")
    folder = os.path.join(storage.strip_scheme(storage_uri), name, "tensorboard")
    return folder, folder


def pretrain(cfg: TrainConfig, *, address: str | None = None, log: Log = say) -> RunSummary:
    from physiofm.platform.console import quiet_driver

    quiet_driver()  # before Ray Data is first imported: it reads its logging config then
    import ray.train
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    if cfg.scaling.cpus_per_worker > 0:  # an explicit CPU request is checked against the cluster first
        connect_ray(address, log)
        worker_cpus(cfg, log)
    checked: dict = {}

    def join_cluster() -> None:
        """Join (or start) the cluster and refuse, within seconds, workers it can never hold."""
        connect_ray(address, log)
        if not checked:
            checked.update(check_workers(cfg, log))

    corpus, info = resolve_corpus(cfg, log, address, connect=join_cluster)
    check_corpus(cfg, corpus, info)
    run_uri = storage.join(cfg.run.storage, cfg.run.name)
    previous = existing_checkpoints(run_uri)
    if previous:  # settings the checkpoints cannot restore into are refused before any Ray starts
        check_resume(cfg, run_uri, log)
    join_cluster()
    if getattr(cfg.method, "init_from", ""):
        from physiofm.platform.methods import read_initial_weights

        try:
            cfg.method.build(initial_weights=read_initial_weights(cfg.method.init_from))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - any unreadable weights file is a config error here
            raise ConfigError(f"method.init_from {cfg.method.init_from!r} cannot be loaded: {err}") from err
    template = deepspeed_template(cfg.run.zero_stage)

    if previous:
        fs, run_path = storage.fsspec_filesystem(run_uri)
        recovery = recover_run(fs, run_path, log)  # the newest complete checkpoint, Ray's snapshot to match
        if recovery.resume_from:
            log(f"run '{cfg.run.name}' has checkpoints in {run_uri}: resuming from {recovery.resume_from}")
    write_record(cfg, run_uri)

    from physiofm.data.loader import training_dataset

    required, optional = cfg.method.columns
    available = set(info.get("columns", {})) | set(info.get("metadata_columns", []))
    streamed = [*required, *(c for c in optional if c in available)]
    extra = [*cfg.method.grouping_columns]
    if cfg.data.validation_fraction > 0:
        extra += cfg.data.validation_by
    read = list(dict.fromkeys([*streamed, *extra]))

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False  # the loop logs its own progress line
    datasets = {"train": training_dataset(corpus, columns=read)}
    if cfg.data.validation_fraction > 0:
        from physiofm.data.splits import split_by_group

        by = list(cfg.data.validation_by)
        train, validation, held_out = split_by_group(datasets["train"], by, cfg.data.validation_fraction,
                                                     cfg.run.seed)
        datasets = {"train": train, "validation": validation}
        log(f"validation: {len(held_out)} groups by {by} held out ({cfg.data.validation_fraction:.0%})")
    held = hold_in_memory(datasets, cfg, info, read)  # before the method's passes: they read memory then
    if held:
        datasets = held
    datasets = cfg.method.prepare_datasets(datasets, streamed)
    if held:
        datasets = worker_shards(datasets, cfg.scaling.num_workers)

    if storage.is_remote(cfg.run.storage):
        storage_fs, storage_path = storage.pyarrow_filesystem(cfg.run.storage, via_fsspec=True)
    else:
        storage_fs, storage_path = None, storage.strip_scheme(cfg.run.storage)
    tensorboard_dir, tensorboard_uri = tensorboard_locations(cfg.run.storage, cfg.run.name)
    loop_config = cfg.to_dict()
    loop_config[DEEPSPEED_KEY] = deepspeed_config(cfg, template, cfg.scaling.use_gpu)
    loop_config[TENSORBOARD_KEY] = tensorboard_dir
    loop_config[TENSORBOARD_SYNC_KEY] = tensorboard_uri if tensorboard_uri != tensorboard_dir else ""
    loop_config[SHARDS_KEY] = bool(held)

    cpus, resources = checked["cpus"], checked["bundle"]
    loop_config[THREADS_KEY] = worker_threads(cpus)
    log(f"{cfg.scaling.num_workers} worker(s) x {cpus:g} CPU(s), {worker_threads(cpus)} torch thread(s) each")
    wait_for_workers(cfg.scaling.num_workers, resources, timeout_s=cfg.scaling.scale_up_timeout_s, log=log)
    from physiofm.platform.console import train_logging_config
    from physiofm.platform.sweep_trial import tune_callbacks  # reports reach Tune when a sweep's trial pretrains

    def new_trainer():  # a second one resumes the same run (Ray's snapshot) after a recovery
        return TorchTrainer(
            train_loop_per_worker,
            train_loop_config=loop_config,
            dataset_config=ingest_config(split=not held),
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(
                name=cfg.run.name, storage_path=storage_path, storage_filesystem=storage_fs,
                failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
                logging_config=train_logging_config(), callbacks=tune_callbacks(cfg)),
            datasets=datasets,
        )

    trainer = new_trainer()
    log(f"training {cfg.method.name} on {info['counts']['windows']} windows with {cfg.scaling.num_workers} workers, "
        f"ZeRO-{cfg.run.zero_stage}, up to global_step={cfg.run.max_steps}"
        + (f"; the corpus ({corpus_mib(info, read):.1f} MiB) read once into memory" if held else ""))
    try:
        result = trainer.fit()
    except Exception as error:  # noqa: BLE001 - only a damaged checkpoint is handled here
        if DAMAGED not in str(error):
            raise
        # A checkpoint damaged after it was verified (every restore attempt failed on it): skip it
        # as at a start, then run again, once, from the newest complete one.
        log("training stopped: a checkpoint it restored is damaged; resuming from the newest complete one")
        fs, run_path = storage.fsspec_filesystem(run_uri)
        recover_run(fs, run_path, log)
        result = new_trainer().fit()
    metrics = result.metrics or {}
    checkpoint_path = result.checkpoint.path if result.checkpoint else ""
    checkpoint_uri = storage.to_uri(cfg.run.storage, checkpoint_path) if checkpoint_path else ""
    export_uri = storage.join(checkpoint_uri, "export") if checkpoint_uri else ""
    exports: list[str] = []
    if export_uri:
        fs, path = storage.fsspec_filesystem(export_uri)
        exports = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) if fs.exists(path) else []
    return RunSummary(
        name=cfg.run.name, run_uri=run_uri,
        global_step=int(metrics.get("global_step", 0)), start_step=int(metrics.get("start_step", 0)),
        resumed_from=str(metrics.get("resumed_from", "")),
        first_loss=float(metrics.get("first_loss", float("nan"))), last_loss=float(metrics.get("loss", float("nan"))),
        samples_per_s=float(metrics.get("samples_per_s", 0.0)),
        input_wait_share=float(metrics.get("input_wait_share", 0.0)),
        val_loss=float(metrics.get("val_loss", float("nan"))),
        checkpoint_uri=checkpoint_uri, export_uri=export_uri, exports=exports,
        cbramod_export=cfg.method.name == "masked_reconstruction",
        tensorboard_uri=tensorboard_uri, num_workers=cfg.scaling.num_workers,
        torch_threads=int(metrics.get("torch_threads", 0)),
        elapsed_s=time.perf_counter() - started,
        next=tuple(next_commands("pretrain", method=cfg.method.name, export_uri=relative(export_uri),
                                 exports=exports, corpus=relative(corpus), run_uri=relative(run_uri))))
