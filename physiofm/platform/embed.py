"""Batch embedding: run a trained encoder over a prepared corpus with Ray Data, write Parquet.

Windows stream from the corpus shards into a pool of encoder actors (`map_batches`), each actor
loading the encoder once; every output row keeps the window's metadata beside its embedding.
Output: `OUTPUT/embeddings/*.parquet` and `OUTPUT/embeddings.json` (what was embedded, how).
"""
from __future__ import annotations

import io
import json
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from physiofm.data import storage

KEPT_COLUMNS = ("recording", "dataset", "subject", "session", "trial", "window_index", "window_start_s",
                "label", "labels")


@dataclass
class EmbedConfig:
    corpus: str
    encoder: str  # a physiofm export or the official CBraMod weights (local path or s3://)
    output: str
    pooling: Literal["mean", "flatten"] = "mean"
    batch_size: int = 64
    actors: int = 1
    use_gpu: bool = False

    def validate(self) -> "EmbedConfig":
        if self.pooling not in ("mean", "flatten"):
            raise ValueError(f"pooling must be 'mean' or 'flatten', got {self.pooling!r}")
        for name in ("batch_size", "actors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        return self


class EncoderActor:
    """Holds one encoder; embeds numpy batches of windows (B, C, N, P)."""

    def __init__(self, weights: bytes, pooling: str, use_gpu: bool):
        import torch

        from physiofm.encoders import CBraMod

        self.torch = torch
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.encoder = CBraMod.from_pretrained(io.BytesIO(weights)).to(self.device).eval()
        self.pooling = pooling

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        x = torch.as_tensor(np.asarray(batch.pop("x"), dtype=np.float32), device=self.device)
        present = batch.pop("channel_mask", None)
        with torch.no_grad():
            if present is None:
                embedding = self.encoder.embed(x, self.pooling)
            else:
                # Zero-filled absent leads are fed as masked and left out of the mean.
                keep = torch.as_tensor(np.asarray(present, dtype=bool), device=self.device)
                features = self.encoder.encode(x, mask=~keep[:, :, None].expand(-1, -1, x.shape[2]))
                if self.pooling == "flatten":
                    embedding = (features * keep[:, :, None, None]).flatten(1)
                else:
                    weights = keep[:, :, None, None].float()
                    embedding = (features * weights).sum((1, 2)) / (weights.sum((1, 2)) * x.shape[2]).clamp(min=1)
        batch["embedding"] = embedding.float().cpu().numpy()
        return batch


def _save_mode(output: str):
    """Replace the embeddings of an earlier run of ours (its embeddings.json is there); never write
    into an `embeddings/` folder something else made."""
    from ray.data import SaveMode

    if storage.exists(storage.join(output, "embeddings.json")):
        return SaveMode.OVERWRITE
    if storage.exists(storage.join(output, "embeddings")):
        raise ValueError(f"{storage.join(output, 'embeddings')} exists and was not written by jobs/embed.py "
                         "(no embeddings.json beside it): give another --output")
    return SaveMode.APPEND


def embed_corpus(cfg: EmbedConfig, log=print) -> dict:
    import ray

    from physiofm.data.loader import corpus_info, training_dataset
    from physiofm.platform.trainer import connect_ray

    cfg.validate()
    started = time.perf_counter()
    info = corpus_info(cfg.corpus)
    if "x" not in info["columns"] or len(info["columns"]["x"]["shape"]) != 3:
        raise ValueError(f"{cfg.corpus}: embedding needs windows 'x' shaped (channels, patches, samples), "
                         f"the corpus has {info['columns']}")
    fs, path = storage.fsspec_filesystem(cfg.encoder)
    weights = storage.retry(lambda: fs.cat_file(path), what=f"read {cfg.encoder}")
    connect_ray(log=log)
    columns = ["x", *(c for c in ("channel_mask", *KEPT_COLUMNS) if c in info["columns"]
                      or c in info.get("metadata_columns", []))]
    dataset = training_dataset(cfg.corpus, columns=columns)
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    # An actor pool that holds every CPU starves the read tasks: keep a CPU free for them.
    actor_cpus = 1.0 if cpus - cfg.actors >= 1 else max(0.25, (cpus - 1) / cfg.actors)
    with warnings.catch_warnings():
        # Not restarted: Ray Data ships an actor's constructor through the object store, and Ray logs an
        # error for every restartable actor built that way. A dead actor ends the job, whose re-run
        # embeds every window again into the same output (replaced, not appended to).
        warnings.simplefilter("ignore", DeprecationWarning)  # max_restarts: only the remote-args route
        embedded = dataset.map_batches(
            EncoderActor, fn_constructor_kwargs={"weights": weights, "pooling": cfg.pooling, "use_gpu": cfg.use_gpu},
            batch_size=cfg.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.actors),
            num_cpus=actor_cpus, num_gpus=1 if cfg.use_gpu else 0, max_restarts=0)
    out_fs, out_path = storage.pyarrow_filesystem(storage.join(cfg.output, "embeddings"))
    embedded.write_parquet(out_path, filesystem=out_fs, mode=_save_mode(cfg.output))
    rows = info["counts"]["windows"]
    summary = {**asdict(cfg), "windows": rows, "window_shape": info["columns"]["x"]["shape"],
               "seconds": round(time.perf_counter() - started, 3)}
    summary["windows_per_s"] = round(rows / summary["seconds"], 3)
    storage.write_bytes(storage.join(cfg.output, "embeddings.json"), json.dumps(summary, indent=1).encode())
    log(f"[embed] {rows} windows embedded ({cfg.pooling} pooling) into {storage.join(cfg.output, 'embeddings')} "
        f"in {summary['seconds']:.1f} s ({summary['windows_per_s']} windows/s)")
    return summary
