"""Read a prepared corpus: its description, a Ray Dataset for training, numpy for notebooks."""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from physiofm.data import storage
from physiofm.data.corpus import CorpusLayout


def corpus_info(uri: str, **storage_options: Any) -> dict[str, Any]:
    """corpus.json of the corpus at `uri`, with the manifest's status counts; fails fast on a
    corpus that is missing or holds no windows."""
    layout = CorpusLayout(uri, storage_options)
    info = layout.read_json(layout.corpus_json)
    if info is None:
        raise FileNotFoundError(f"no prepared corpus at {uri}: corpus.json is missing (run jobs/prepare_corpus.py)")
    if info["counts"]["windows"] == 0:
        raise ValueError(f"corpus {uri} holds no windows ({info['counts']['rejected']} files rejected: "
                         f"{info.get('rejected_reasons', {})})")
    info["uri"] = uri
    return info


def training_dataset(uri: str, columns: list[str] | None = None, **storage_options: Any):
    """The windows as a `ray.data.Dataset` (streamed from the shards) for `datasets={"train": ...}`."""
    import ray.data

    corpus_info(uri, **storage_options)
    filesystem, path = storage.pyarrow_filesystem(storage.join(uri, "windows"), **storage_options)
    return ray.data.read_parquet(path, filesystem=filesystem, columns=columns)


def read_windows(uri: str, columns: list[str] | None = None, limit: int | None = None,
                 **storage_options: Any) -> dict[str, np.ndarray]:
    """Windows as numpy, without a Ray cluster: tensors stacked (n, ...), other columns 1-D.

    Files are read in name order and stop once `limit` rows are in.
    """
    import ray.data  # noqa: F401 - registers Ray's tensor extension types with pyarrow

    corpus_info(uri, **storage_options)
    layout = CorpusLayout(uri, storage_options)
    fs, files = layout.fs, layout.window_files()
    parts: dict[str, list[np.ndarray]] = {}
    remaining = limit
    for path in files:
        table = pq.read_table(io.BytesIO(storage.retry(lambda p=path: fs.cat_file(p))), columns=columns)
        if remaining is not None:
            table = table.slice(0, remaining)
            remaining -= table.num_rows
        for name in table.column_names:
            parts.setdefault(name, []).append(_to_numpy(table.column(name)))
        if remaining is not None and remaining <= 0:
            break
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _to_numpy(column) -> np.ndarray:
    chunk = column.combine_chunks()
    if hasattr(chunk, "to_numpy_ndarray"):  # Ray tensor extension column
        return chunk.to_numpy_ndarray()
    return chunk.to_numpy(zero_copy_only=False)


def labels_of(windows: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """The `labels` column decoded from JSON."""
    return [json.loads(text) for text in windows["labels"]]
