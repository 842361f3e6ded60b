"""What a run prints: our own progress lines, the real warnings and errors, and nothing else.

Ray, Ray Data, Ray Train and DeepSpeed each report their routine steps (executions started,
worker groups placed, checkpoints written, accelerators detected) at INFO, and some notices that
are not the user's concern at WARNING. They are silenced where they are made, never by filtering
stderr: the driver's `ray` logger, Ray Train's `LoggingConfig`, a Ray Data logging config file, and
environment variables read by Ray Train and DeepSpeed. Warnings and errors about the run stay.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

#: Ray Data's own logging config, with its console at WARNING (the same file log, at DEBUG) and
#: without the notice that progress bars are off (our progress line replaces them).
RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")
RAY_LOG_LEVEL = logging.WARNING


def say(line: str) -> None:
    """One line of ours on stdout, flushed: it keeps its place among the workers' lines."""
    print(line, flush=True)


def local_ray_environment() -> dict[str, str]:
    """Environment for a local Ray started by a job; every process of that cluster inherits it.

    - No Ray Train preemption watcher: one local node is never preempted (the watcher's actor logs
      an error-level line at every start).
    - Ray Data's console at WARNING, through its logging config file.
    - One actor reading Parquet footers when a dataset is listed: Ray Data asks for 32 by default (a
      Python process each, spread over a cluster), which a single machine starts and kills again at
      every read, and the kill of one still starting is logged by Ray's GCS as an error.
    - Ray Train's controller polls its workers every 0.5 s (default 2 s): on one machine a poll costs
      next to nothing, and the default adds about 3 s to the end of every run (the last report and
      the workers' exit are each seen one poll late).
    """
    return {"RAY_DATA_PARQUET_FOOTER_NUM_ACTORS": os.environ.get("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "1"),
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"),
            "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
            "RAY_DATA_LOGGING_CONFIG": os.environ.get("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))}


def quiet_local_start() -> None:
    """A new local Ray turns token auth on when `RAY_AUTH_MODE` is unset (Ray >= 2.59, a token in
    ~/.ray/auth_token) and warns that it did so, on every run: that is Ray's secure default and not
    news to act on, so its notice is not shown (the mode still follows RAY_AUTH_MODE when set)."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def quiet_driver() -> None:
    """Ray Data in the driver process (joined clusters too): its console at WARNING."""
    os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))


def train_logging_config():
    """Ray Train's controller and workers report their routine steps at INFO: show warnings only."""
    import ray.train

    return ray.train.LoggingConfig(log_level="WARNING")


def quiet_training_worker(use_gpu: bool) -> None:
    """In a training worker, before DeepSpeed is imported.

    On CPU: name the accelerator (DeepSpeed warns when it falls back to CPU by detection), and skip
    DeepSpeed's shared-memory all-reduce op, which serves inference only and prints a line each time
    it is loaded. On every device: DeepSpeed's Muon kernels are compiled only if called.
    """
    import warnings

    # ZeRO-3 calls a torch collective that torch deprecates, once per step: not the user's concern
    warnings.filterwarnings("ignore", message=r".*reduce_scatter_tensor.* is deprecated", category=FutureWarning)
    if not use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    defer_deepspeed_muon_compile()
    our_logger()


def defer_deepspeed_muon_compile() -> None:
    """DeepSpeed's ZeRO code imports its Muon optimizer module for type checks, and that module's
    `@torch.compile` decorators import torch's inductor at import: 2.3 s of CPU in every training
    worker, at every start, for kernels that run only when Muon is the optimizer (ours is always a
    torch one, `build_optimizer`). The module is imported here with DeepSpeed's `compile()` decorator
    made lazy: each kernel is compiled by torch on its first call, as before, and never otherwise."""
    import functools

    import torch

    try:
        from deepspeed.runtime import compiler
    except ImportError:
        return
    eager_compile = getattr(compiler, "compile", None)
    if eager_compile is None:  # another DeepSpeed: nothing to defer
        return

    def lazily(fn):
        compiled = []

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if not compiled:
                compiled.append(torch.compile(fn))
            return compiled[0](*args, **kwargs)

        return call

    compiler.compile = lambda: lazily
    try:
        import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401
    except ImportError:
        pass
    finally:
        compiler.compile = eager_compile


def our_logger() -> logging.Logger:
    """The `physiofm` logger: one plain line per message on stderr, whatever level Ray gives the
    root logger of a worker."""
    logger = logging.getLogger("physiofm")
    if not any(getattr(h, "_physiofm", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._physiofm = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger
