"""One trial of an emotion sweep: a Ray Tune function trainable (`run_trial`).

A trial (1) pretrains, briefly and with the trial's masking ratios or temperatures, each encoder
the search space names (`PRETRAININGS`), through that method's own job (`jobs/pretrain_*.py`:
its `main(argv)`, hence `pretrain()` and the one Ray Train + DeepSpeed loop; Train's reports reach
Tune through `TuneReportCallback`, the driver-function pattern of Ray 2.60); (2) fine-tunes with
the trial's head on every fold of the protocol, with `fit_fold` of the fine-tuning job (the one
loop on `LocalEngine`), never predicting a test window; (3) reports each epoch's validation score
over the folds (ASHA stops a trial between epochs), and at the end the protocol's validation
metrics computed by `finish_protocol`, the same function `run_protocol` ends with: the best
configuration re-run with `jobs/finetune_emotion.py` gives the same numbers.

The folds of a trial run in turn, one epoch each, in threads of the trial's process (one runs
at a time, each with its own torch random state): every fold trains exactly as it would alone,
and the trial can report epoch by epoch the mean over all folds.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from physiofm.data import storage
from physiofm.platform.config import ConfigError
from physiofm.platform.search_space import COMMON_SETTINGS, PRETRAININGS, SearchSpace

PHASE_PRETRAINING, PHASE_FINETUNING = "pretraining", "finetuning"


@dataclass
class SweepData:
    """What every trial of a sweep shares; the driver puts it in the object store once."""

    space: SearchSpace
    base: dict[str, Any]  # FinetuneConfig fields every trial starts from
    base_encoders: dict[str, str]  # modality -> encoder family before pretraining replaces some
    arrays: dict[str, np.ndarray]  # the labelled windows (fold_arrays of the prepared protocol)
    prepared: Any  # physiofm.platform.finetune.Prepared without its arrays (table, folds, protocol, ...)
    metric: str  # the reported metric: validation_<selection metric>
    sweep_uri: str  # STORAGE/NAME: pretraining runs of each trial go under pretraining/<trial id>/
    corpora: dict[str, str]  # pretraining method -> its prepared corpus
    jobs_dir: str  # where jobs/pretrain_*.py are
    threads: int = 1  # torch threads of each fold (as --cpus-per-fold of the fine-tuning job)
    device: str = "cpu"


def metric_name(selection_metric: str) -> str:
    return f"validation_{selection_metric}"


# ---------------------------------------------------------------- the trainable

def run_trial(config: dict[str, Any], data: SweepData) -> None:
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or "trial"
    finetune_fields, methods = data.space.split(config)
    inits = {group: pretrain_in_trial(group, methods[group], data, trial_id) for group in data.space.groups}
    cfg = trial_config(data, finetune_fields, inits)
    fine_tune(cfg, data, report=tune.report)


def trial_config(data: SweepData, finetune_fields: dict[str, Any], inits: dict[str, str]):
    """The trial's FinetuneConfig: the sweep's base, the trial's values, its pretrained encoders."""
    from physiofm.platform.finetune import FinetuneConfig

    cfg = FinetuneConfig(**{**data.base, **finetune_fields})
    if data.space.groups:
        cfg.encoder, cfg.init = wire_encoders(data.base_encoders, data.space.groups, inits)
    cfg.evaluate_test, cfg.save_models, cfg.fold_indices = False, False, ()
    return cfg


def wire_encoders(base: dict[str, str], groups: list[str], inits: dict[str, str]) -> tuple[str, str]:
    """(--encoder, --init) of the fine-tuning: each pretrained method's family on its modalities."""
    whole = [g for g in groups if PRETRAININGS[g].whole]
    if whole:
        method = PRETRAININGS[whole[0]]
        return method.family, inits.get(method.name, "")
    mapping, init = dict(base), []
    for group in groups:
        method = PRETRAININGS[group]
        taken = [m for m in method.modalities if m in mapping]
        if not taken:
            raise ConfigError(f"pretraining {group!r} encodes {list(method.modalities)} windows; the fine-tuning "
                              f"reads {sorted(mapping)}: choose a dataset with {method.modalities[0]} signals")
        for m in taken:
            mapping[m] = method.family
            if inits.get(group):
                init.append(f"{m}={inits[group]}")
    return ",".join(f"{m}={f}" for m, f in mapping.items()), ",".join(init)


def fine_tune(cfg, data: SweepData, report: Callable[[dict], None]) -> dict[str, Any]:
    """Fine-tune every fold of `cfg` on the sweep's windows, reporting each epoch; returns the final report."""
    from physiofm.platform.finetune import Recipe, finish_protocol, plan, score_fold

    p = plan(cfg)
    shapes = data.prepared.described["shapes"]
    train_config = Recipe(p).train_config(shapes)
    train_config.method.check_corpus(shapes)
    prepared = dataclasses.replace(data.prepared, plan=p, arrays=data.arrays, train_config=train_config,
                                   started=time.perf_counter())
    chosen = list(range(len(prepared.folds)))
    tasks = [prepared.fold_task(i, data.device) for i in chosen]
    selection = cfg.selection_metric
    state = {"last": None}

    def on_epochs(epoch: int, points: list[dict]) -> None:
        best_so_far = [max(q[f"val_{selection}"] for q in fold_points) for fold_points in points]
        now = [fold_points[-1] for fold_points in points]
        row = {"phase": PHASE_FINETUNING, "epoch": epoch, data.metric: float(np.mean(best_so_far)),
               f"{data.metric}_at_epoch": float(np.mean([q[f"val_{selection}"] for q in now])),
               "train_loss": float(np.mean([q["train_loss"] for q in now])),
               "val_loss": float(np.mean([q.get("val_loss", math.nan) for q in now]))}
        if epoch < cfg.epochs:
            report(row)
        else:
            state["last"] = row

    results = fit_folds_in_turn(tasks, prepared.fold_arrays(), p.weights, data.threads, on_epochs)
    scored = [score_fold(r, p.scheme) for r in results]
    outcome = finish_protocol(prepared, scored, chosen)
    final = dict(state["last"] or {"phase": PHASE_FINETUNING, "epoch": cfg.epochs})
    final.update({f"validation_{k}": float(v) for k, v in outcome.validation_mean.items() if v is not None})
    final["best_epochs"] = [int(r["best_epoch"]) for r in results]
    report(final)
    return final


# ---------------------------------------------------------------- folds in turn

class _Stopped(Exception):
    """The trial ended (ASHA stopped it, or a fold failed): the other folds stop too."""


class _Turns:
    """Lets one fold thread run at a time, in order, an epoch each; keeps each fold's torch random
    state across its turns, so a fold draws what it would draw alone in its own process."""

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.turn, self.finished, self.stopped = 0, [False] * n, False
        self.states: list[Any] = [None] * n

    def acquire(self, i: int) -> None:
        import torch

        with self.cond:
            self.cond.wait_for(lambda: self.stopped or self.turn == i)
            if self.stopped:
                raise _Stopped()
            if self.states[i] is not None:
                torch.set_rng_state(self.states[i])

    def release(self, i: int, finished: bool = False) -> None:
        import torch

        with self.cond:
            if finished:
                self.finished[i] = True
            else:
                self.states[i] = torch.get_rng_state()
            if self.turn == i:
                n = len(self.finished)
                for step in range(1, n + 1):
                    candidate = (i + step) % n
                    if not self.finished[candidate]:
                        self.turn = candidate
                        break
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def fit_folds_in_turn(tasks: list[dict], arrays: dict, weights, threads: int,
                      on_epochs: Callable[[int, list[list[dict]]], None]) -> list[dict]:
    """`fit_fold` of every task, an epoch of each in turn; `on_epochs(e, points)` once every fold has
    finished epoch e (points: each fold's per-epoch points so far). Returns the folds' results."""
    from physiofm.platform.fold import fit_fold

    n = len(tasks)
    turns = _Turns(n)
    points: list[list[dict]] = [[] for _ in range(n)]
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n

    def work(i: int) -> None:
        try:
            turns.acquire(i)

            def on_epoch(point: dict) -> None:
                with turns.cond:
                    points[i].append(point)
                    turns.cond.notify_all()
                turns.release(i)
                turns.acquire(i)

            results[i] = fit_fold(tasks[i], arrays, weights, threads, on_epoch=on_epoch)
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the trial's thread, which raises it
            errors[i] = err
        finally:
            turns.release(i, finished=True)

    workers = [threading.Thread(target=work, args=(i,), name=f"fold-{i}", daemon=True) for i in range(n)]
    for w in workers:
        w.start()
    try:
        reported = 0
        while True:
            with turns.cond:
                turns.cond.wait_for(lambda: any(errors) or all(turns.finished)
                                    or min(len(p) for p in points) > reported)
                failed = next((e for e in errors if e is not None), None)
                ready = min(len(p) for p in points)
                done = all(turns.finished)
            if failed is not None:
                raise RuntimeError(f"{tasks[errors.index(failed)]['fold']['name']} failed: {failed}") from failed
            while reported < ready:
                reported += 1
                on_epochs(reported, [p[:reported] for p in points])
            if done:
                break
    finally:
        turns.stop()
        for w in workers:
            w.join(timeout=60)
    return results


# ---------------------------------------------------------------- pretraining inside a trial

_REPORTING: dict[str, str] = {}  # the sweep metric Tune expects in every result (set around a trial's pretraining)


def tune_callbacks(cfg) -> list:
    """Ray Train callbacks of a pretraining run: inside a Tune trial, one that reports each of
    Train's reports to the trial (`pretraining_<run name>_loss`, ..._step); none elsewhere."""
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session
    except ImportError:
        return []
    if not _in_tune_session():
        return []
    return [_pretraining_report(cfg.run.name, _REPORTING.get("metric", ""))]


def _pretraining_report(prefix: str, metric: str):
    from ray.tune.integration.ray_train import TuneReportCallback

    class PretrainingReport(TuneReportCallback):
        """Train's rank-0 metrics, renamed for the trial (its fine-tuning epochs stay the only
        `epoch`, ASHA's time axis), with the sweep metric unset (NaN) while pretraining runs."""

        def after_report(self, run_context, metrics, checkpoint):
            source = metrics[0]
            item = {"phase": PHASE_PRETRAINING, f"pretraining_{prefix}_step": int(source.get("global_step", 0))}
            for key in ("loss", "val_loss", "samples_per_s"):
                if key in source:
                    item[f"pretraining_{prefix}_{key}"] = float(source[key])
            if metric:
                item[metric] = math.nan
            self._training_actor_item_queue.put(item)

    return PretrainingReport()


def load_job(jobs_dir: str, name: str):
    """The job module `jobs/<name>.py` (the pretraining jobs are scripts, not a package)."""
    path = Path(jobs_dir) / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"pretraining trials run the pretraining jobs of a checkout: {path} not found "
                          "(run the sweep from the repository, or with `ray job submit --working-dir .`)")
    spec = importlib.util.spec_from_file_location(f"physiofm_job_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pretraining_argv(group: str, settings: dict[str, Any], config_file: str, output: str, corpus: str) -> list[str]:
    """The job's command line of a trial's short pretraining run."""
    argv = ["--config", config_file, "--output", output, "--name", group, "--corpus", corpus,
            "--checkpoint-every", str(int(settings["max_steps"]))]
    for key, value in settings.items():
        if key == "corpus" or value in ("", None):
            continue
        argv += [COMMON_SETTINGS[key], str(value)]
    return argv


def pretrain_in_trial(group: str, method_values: dict[str, Any], data: SweepData, trial_id: str) -> str:
    """Run the trial's short pretraining of `group`; returns the export the fine-tuning reads."""
    import yaml

    from physiofm.platform.trainer import existing_checkpoints

    method = PRETRAININGS[group]
    settings = data.space.pretraining_settings(group)
    output = storage.join(data.sweep_uri, "pretraining", trial_id)
    job = load_job(data.jobs_dir, method.job)
    with tempfile.TemporaryDirectory(prefix="physiofm-trial-") as folder:
        config_file = str(Path(folder) / f"{group}.yaml")
        Path(config_file).write_text(yaml.safe_dump({"method": dict(method_values)}))
        argv = pretraining_argv(group, settings, config_file, output, data.corpora[group])
        print(f"[tune] trial {trial_id}: pretraining {group} with {method_values}: jobs/{method.job}.py "
              + " ".join(argv), flush=True)
        _REPORTING["metric"] = data.metric
        try:
            code = job.main(argv)
        finally:
            _REPORTING.pop("metric", None)
            sys.stdout.flush()
    if code != 0:
        raise RuntimeError(f"jobs/{method.job}.py exited {code} in trial {trial_id} (its log is the trial's)")
    run_uri = storage.join(output, group)
    checkpoints = existing_checkpoints(run_uri)
    if not checkpoints:
        raise RuntimeError(f"jobs/{method.job}.py wrote no checkpoint under {run_uri}")
    export = storage.join(run_uri, checkpoints[-1], "export")
    return storage.join(export, method.export) if method.export else export
