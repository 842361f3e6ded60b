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


def test_a_held_corpus_is_cut_once_into_equal_disjoint_shards_one_per_worker(ecg_corpus):
    from physiofm.platform.train_loop import shard_name
    from physiofm.platform.trainer import ingest_config, worker_shards

    info = corpus_info(ecg_corpus)
    datasets = {"train": training_dataset(ecg_corpus, columns=["x", "recording"])}
    held = hold_in_memory(datasets, config(ecg_corpus, 1024), info, ["x", "recording"])
    for workers in (2, 5):
        shards = worker_shards({"train": held["train"].select_columns(["x", "recording"])}, workers)
        assert sorted(shards) == [shard_name("train", rank) for rank in range(workers)]
        assert all(isinstance(s, MaterializedDataset) for s in shards.values())
        recordings = [sorted(r["recording"] for r in s.take_all()) for s in shards.values()]
        assert {len(r) for r in recordings} == {24 // workers}  # equal: every rank runs the same steps
        seen = [r for shard in recordings for r in shard]
        assert len(set(seen)) == len(seen) == workers * (24 // workers)  # disjoint
    # the shards are handed to the workers as they are; a streamed corpus is split by Ray
    assert ingest_config(split=False)._datasets_to_split == []
    assert ingest_config()._datasets_to_split == "all"
