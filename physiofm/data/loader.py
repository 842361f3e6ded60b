"""Read a prepared corpus: its description, a Ray Dataset for training, numpy for notebooks.

Only the window files the manifest's commits name are read (never leftovers or foreign files under
windows/), and never a column of pickled Python objects (Ray's `arrow_pickled_object`): reading one
would run whatever the pickle says. The pipeline writes none; a corpus that holds one was written
by something else.
"""
from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from physiofm.data import storage
from physiofm.data.corpus import CorpusLayout, read_manifest_rows

PICKLED_COLUMN_TYPE = "ray.data.arrow_pickled_object"


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


def corpus_files(uri: str, **storage_options: Any) -> list[str]:
    """Paths (in the storage's filesystem) of the window files the corpus's manifest commits."""
    layout = CorpusLayout(uri, storage_options)
    return layout.committed_window_files(read_manifest_rows(layout))


def _holds_pickles(dtype) -> bool:
    import pyarrow as pa

    if isinstance(dtype, pa.ExtensionType):
        return dtype.extension_name == PICKLED_COLUMN_TYPE or _holds_pickles(dtype.storage_type)
    if pa.types.is_dictionary(dtype):
        return _holds_pickles(dtype.value_type)
    return any(_holds_pickles(dtype.field(i).type) for i in range(dtype.num_fields))


def pickled_columns(schema) -> list[str]:
    """Columns of a Parquet schema that hold (or nest) pickled Python objects."""
    return [f.name for f in schema if _holds_pickles(f.type)
            or (f.metadata or {}).get(b"ARROW:extension:name", b"").decode() == PICKLED_COLUMN_TYPE]


def _safe_columns(schema, columns: list[str] | None, where: str) -> list[str]:
    """`columns` (default: all) without pickled ones; asking for a pickled one is an error."""
    pickled = pickled_columns(schema)
    if columns is None:
        return [name for name in schema.names if name not in pickled]
    asked = [c for c in columns if c in pickled]
    if asked:
        raise ValueError(f"column(s) {asked} of {where} hold pickled Python objects: physiofm never writes such "
                         "columns and does not unpickle data from storage")
    return list(columns)


def training_dataset(uri: str, columns: list[str] | None = None, **storage_options: Any):
    """The windows as a `ray.data.Dataset` (streamed from the committed shards) for `datasets={"train": ...}`."""
    import ray.data

    corpus_info(uri, **storage_options)
    files = corpus_files(uri, **storage_options)
    filesystem, _ = storage.pyarrow_filesystem(storage.join(uri, "windows"), **storage_options)
    if not files:
        raise ValueError(f"corpus {uri}: its manifest names no window file present under windows/")
    columns = _safe_columns(pq.read_schema(files[0], filesystem=filesystem), columns, f"corpus {uri}")
    return ray.data.read_parquet(files, filesystem=filesystem, columns=columns)


def read_windows(uri: str, columns: list[str] | None = None, limit: int | None = None,
                 **storage_options: Any) -> dict[str, np.ndarray]:
    """Windows as numpy, without a Ray cluster: tensors stacked (n, ...), other columns 1-D.

    Files are read in name order and stop once `limit` rows are in.
    """
    import ray.data  # noqa: F401 - registers Ray's tensor extension types with pyarrow

    corpus_info(uri, **storage_options)
    layout = CorpusLayout(uri, storage_options)
    fs, files = layout.fs, corpus_files(uri, **storage_options)
    parts: dict[str, list[np.ndarray]] = {}
    remaining = limit
    for path in files:
        data = io.BytesIO(storage.retry(lambda p=path: fs.cat_file(p)))
        wanted = _safe_columns(pq.read_schema(data), columns, path)
        table = pq.read_table(data, columns=wanted)
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
