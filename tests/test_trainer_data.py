"""What the driver hands Ray Train: a small corpus read once into memory (each epoch streams from the
object store), a large one streamed from storage; its size taken from corpus.json."""
from __future__ import annotations

import numpy as np
from ray.data.dataset import MaterializedDataset

from physiofm.data.loader import corpus_info, read_windows, training_dataset
from physiofm.platform.config import TrainConfig
from physiofm.platform.trainer import corpus_mib, hold_in_memory


def config(ecg_corpus: str, in_memory_mb: float) -> TrainConfig:
    return TrainConfig.from_dict({"method": {"name": "masked_reconstruction", "modality": "ecg"},
                                  "data": {"corpus": ecg_corpus, "in_memory_mb": in_memory_mb}})


def test_a_small_corpus_is_read_once_into_memory_and_a_large_one_streams(ecg_corpus):
    info = corpus_info(ecg_corpus)
    # 24 windows of (12, 10, 200) float32 and 12 mask booleans, and 64 bytes for a metadata column
    assert corpus_mib(info, ["x", "channel_mask", "recording"]) == 24 * (12 * 10 * 200 * 4 + 12 + 64) / 2**20
    mib = corpus_mib(info, ["x", "channel_mask"])
    datasets = {"train": training_dataset(ecg_corpus, columns=["x", "channel_mask"])}

    assert hold_in_memory(datasets, config(ecg_corpus, 0.9 * mib), info, ["x", "channel_mask"]) is None
    assert hold_in_memory(datasets, config(ecg_corpus, 0), info, ["x", "channel_mask"]) is None  # 0: always stream
    held = hold_in_memory(datasets, config(ecg_corpus, 1.1 * mib), info, ["x", "channel_mask"])
    assert isinstance(held["train"], MaterializedDataset)
    rows = held["train"].take_all()
    stored = read_windows(ecg_corpus, columns=["x"])["x"]
    assert len(rows) == len(stored) == 24
    assert sorted(float(r["x"].sum()) for r in rows) == sorted(float(x.sum()) for x in stored)
    assert np.array_equal(held["train"].take_all()[0]["x"], rows[0]["x"])  # a second epoch reads the same blocks
