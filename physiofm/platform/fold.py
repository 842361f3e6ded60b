"""One fold of a fine-tuning protocol, trained by the one loop (`run_steps`) in a single process.

`fit_fold` runs inside a Ray task (one per fold, in parallel) or in any Python process: it builds
the supervised objective from the fold's `TrainConfig`, trains it on the fold's training windows
with `LocalEngine` (a fold's model is small; DeepSpeed and a Train worker group would cost more to
start than the fold costs to train), scores the validation windows at the end of every epoch,
keeps the epoch with the best validation score (kappa by default, as CBraMod's recipe), and
predicts the test windows with it. Frozen encoders are run once over the fold's windows and the
head trains on their embeddings; their weights and buffers are checked bit-unchanged afterwards.
"""
from __future__ import annotations

import hashlib
import io
import math
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch

from physiofm.evaluation.metrics import classification_metrics
from physiofm.platform.config import TrainConfig
from physiofm.platform.train_loop import LocalEngine, build_optimizer, run_steps

SIDES = ("train", "validation", "test")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Full batches, plus the remainder when it holds two or more windows (batch norm needs two)."""
    return n_train // batch_size + (1 if n_train % batch_size >= 2 else 0)


def _batches(positions: np.ndarray, batch_size: int, generator: np.random.Generator):
    order = positions[generator.permutation(len(positions))]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        if len(chunk) >= 2:
            yield chunk


def fit_fold(task: Mapping[str, Any], arrays: Mapping[str, np.ndarray], weights: Mapping | None = None,
             threads: int = 1, on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train and score one fold. `task`: {"train_config": TrainConfig dict, "fold": {name, index,
    train, validation, test (window indices)}, "epochs", "selection_metric", "evaluate_test",
    "save_model"}; `arrays`: every window's modality columns and class `y`; `on_epoch(point)` gets
    each epoch's training loss and validation scores as they come (a sweep's early stopping)."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(threads)))
    device = torch.device(task.get("device", "cpu"))
    fold = task["fold"]
    sides = {side: np.asarray(fold[side], dtype=np.int64) for side in SIDES}
    if not task.get("evaluate_test", True):
        sides["test"] = sides["test"][:0]  # a sweep's trial never sees the test windows
    cfg = TrainConfig.from_dict(task["train_config"])
    method = cfg.method
    seed = cfg.run.seed * 1_000_003 + int(fold["index"])
    columns = list(method.encoders)
    positions = np.concatenate([sides[s] for s in SIDES])
    data = {m: torch.as_tensor(np.ascontiguousarray(arrays[method.column_of[m]][positions])) for m in columns}
    data["y"] = torch.as_tensor(np.asarray(arrays["y"])[positions], dtype=torch.int64)
    local, offset = {}, 0
    for side in SIDES:  # the fold's windows, renumbered: train first, then validation, then test
        local[side] = np.arange(offset, offset + len(sides[side]))
        offset += len(sides[side])
    if len(local["train"]) < 2:
        raise ValueError(f"{fold['name']}: {len(local['train'])} training windows; a fold needs at least 2")

    if method.needs_fold_stats:  # SCMM's min-max scaling: fitted on this fold's training windows only
        for m in columns:
            flat = data[m][local["train"]].flatten(1)
            method.fold_stats[m] = {"minimum": flat.min(0).values.tolist(), "maximum": flat.max(0).values.tolist()}
    objective = method.build(seed=seed, initial_weights=weights).to(device)
    data = {k: v.to(device) for k, v in data.items()}
    classifier = objective.classifier
    frozen_before = _fingerprint(classifier.encoders) if method.freeze else ""
    real_encoders = None
    if not method.freeze:  # parameter-free stages of trained encoders (spectral band powers): once, too
        with torch.no_grad():
            for m in columns:
                encoder = classifier.encoders[m]
                if hasattr(encoder, "precompute"):
                    data[m] = torch.cat([encoder.precompute(data[m][i:i + 256]) for i in range(0, len(data[m]), 256)])
    if method.freeze:  # embeddings once, not once per epoch
        real_encoders = dict(classifier.encoders.items())
        data, widths = _precompute(classifier, data, columns, cfg.data.batch_size)
        from physiofm.encoders.fusion import PrecomputedEmbedding

        for m in columns:
            classifier.encoders[m] = PrecomputedEmbedding(widths[m])

    batch_size = cfg.data.batch_size
    per_epoch = steps_per_epoch(len(local["train"]), batch_size)
    epochs = int(task["epochs"])
    cfg.run.max_steps, cfg.run.checkpoint_every, cfg.run.log_every = epochs * per_epoch, per_epoch, per_epoch
    optimizer, scheduler = build_optimizer(objective, cfg)
    engine = LocalEngine(objective, optimizer, scheduler, cfg.optim.grad_accum, cfg.optim.grad_clip)
    selection = task.get("selection_metric", "kappa")
    num_classes = method.num_classes
    curve: list[dict[str, float]] = []
    best: dict[str, Any] = {"key": (-math.inf, -math.inf), "epoch": 0, "state": None}

    def batches(epoch: int):
        generator = np.random.default_rng([seed, epoch])
        for chunk in _batches(local["train"], batch_size, generator):
            yield {k: v[chunk] for k, v in data.items()}

    def end_of_epoch(report: dict, step: int) -> None:
        epoch = step // per_epoch
        point = {"epoch": epoch, "train_loss": float(report["loss"]), "lr": float(report["lr"])}
        if len(local["validation"]):
            prob = _predict(objective, data, local["validation"], batch_size)
            y = data["y"][local["validation"]].cpu().numpy()
            scores = epoch_scores(y, prob, num_classes, selection)
            point["val_loss"] = float(-np.log(np.clip(prob[np.arange(len(y)), y], 1e-12, None)).mean())
            point.update({f"val_{k}": v for k, v in scores.items()})
            key = (_finite(scores[selection]), -point["val_loss"])
        else:
            key = (float(epoch), 0.0)  # nothing to select on: the last epoch
        curve.append(point)
        if on_epoch is not None:
            on_epoch(dict(point))
        if key > best["key"]:
            best.update(key=key, epoch=epoch, state={k: v.detach().clone() for k, v in objective.state_dict().items()})

    run_steps(engine, cfg, batches, report=lambda report: None, checkpoint=end_of_epoch, scheduler=scheduler)
    objective.load_state_dict(best["state"])
    result: dict[str, Any] = {"name": fold["name"], "index": int(fold["index"]), "subject": fold.get("subject", ""),
                              "best_epoch": best["epoch"], "curve": curve, "selection_metric": selection,
                              "windows": {side: int(len(sides[side])) for side in SIDES}}
    for side in ("validation", "test"):
        if len(local[side]):
            result[f"{side}_prob"] = _predict(objective, data, local[side], batch_size)
            result[f"{side}_y"] = data["y"][local[side]].cpu().numpy()
    if real_encoders is not None:
        for m, encoder in real_encoders.items():
            classifier.encoders[m] = encoder
        result["frozen_unchanged"] = _fingerprint(classifier.encoders) == frozen_before
    if task.get("save_model", True):
        buffer = io.BytesIO()
        torch.save({"format": "physiofm.finetuned.v1", "fold": fold["name"], "best_epoch": best["epoch"],
                    "train_config": cfg.to_dict(),
                    "state_dict": {k: v.detach().cpu().clone() for k, v in objective.classifier.state_dict().items()}},
                   buffer)
        result["model"] = buffer.getvalue()
    result["seconds"] = time.perf_counter() - started
    return result


def epoch_scores(y: np.ndarray, prob: np.ndarray, num_classes: int, selection: str) -> dict[str, float]:
    """An epoch's validation score: the selection metric only (scikit-learn's, each call of which
    costs more than a small head's epoch); the full set is computed for the selected epoch."""
    from sklearn.metrics import cohen_kappa_score

    if selection == "kappa":
        pred = prob.argmax(axis=1)
        if len(np.unique(np.r_[y, pred])) < 2:
            return {"kappa": 0.0}
        return {"kappa": float(cohen_kappa_score(y, pred, labels=list(range(num_classes))))}
    return {selection: classification_metrics(y, prob, num_classes)[selection]}


def _finite(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else float(value)


@torch.no_grad()
def _predict(objective, data: Mapping[str, torch.Tensor], positions: np.ndarray, batch_size: int) -> np.ndarray:
    was_training = objective.training
    objective.eval()
    parts = [objective.predict({k: v[positions[i:i + batch_size]] for k, v in data.items()})
             for i in range(0, len(positions), batch_size)]
    objective.train(was_training)
    return torch.cat(parts).double().cpu().numpy()


@torch.no_grad()
def _precompute(classifier, data: Mapping[str, torch.Tensor], columns, batch_size: int):
    """Each frozen encoder's embeddings of every window of the fold (eval mode, in batches)."""
    classifier.eval()
    out, widths = {"y": data["y"]}, {}
    for m in columns:
        encoder = classifier.encoders[m]
        chunks = [encoder.embed(data[m][i:i + batch_size], classifier.pooling) for i in range(0, len(data[m]), batch_size)]
        out[m] = torch.cat(chunks)
        widths[m] = out[m].shape[1]
    classifier.train()
    return out, widths


def _fingerprint(module: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, shapes, bytes): equal means bit-unchanged."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
