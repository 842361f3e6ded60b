"""Window shards: the Parquet files a pipeline worker writes itself, one set per task.

A task's windows leave in row groups of about `chunk_bytes` (memory: one chunk plus one recording)
into files named `{prefix}_{n:05d}.parquet` that roll over at `shard_bytes`. The prefix is new for
every task attempt, so a retried or interrupted attempt never mixes with a committed one: its
files are recognised by their prefix, which no commit names (see `corpus.py`).

Rows are converted to Arrow exactly as Ray Data converts its blocks (tensor columns as Ray's tensor
extension type), so `ray.data.read_parquet` and `read_windows` read them as before. Tensor columns
are written without dictionary encoding, compression or statistics (measured: dictionary encoding
of float tensors cost ~25 % of a file's processing and bought nothing; snappy saves nothing on
them either).
"""
from __future__ import annotations

import posixpath
import secrets
from datetime import datetime, timezone

import numpy as np

SHARD_NAME = "{prefix}_{index:05d}.parquet"


def new_prefix() -> str:
    """A shard prefix that sorts by time and holds no `_` (the separator before the file index)."""
    return f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{secrets.token_hex(4)}"


class ShardWriter:
    def __init__(self, filesystem, directory: str, prefix: str, shard_bytes: int, chunk_bytes: int):
        self.filesystem, self.directory, self.prefix = filesystem, directory, prefix
        self.shard_bytes, self.chunk_bytes = shard_bytes, chunk_bytes
        self.pending: list = []  # Arrow tables of whole recordings, in one shape
        self.pending_bytes = 0
        self.writer = None
        self.schema = None
        self.written = 0  # bytes in the open file
        self.files: list[str] = []

    def add(self, batch: dict[str, np.ndarray]) -> None:
        """The window rows of one recording (columns of equal length)."""
        from ray.data.block import BlockAccessor

        table = BlockAccessor.batch_to_block(batch)  # Ray Data's own conversion (tensor columns: no copy)
        if self.pending and table.schema != self.pending[0].schema:
            self.flush()  # a row group never mixes window shapes
        self.pending.append(table)
        self.pending_bytes += table.nbytes
        if self.pending_bytes >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(self.pending)  # chunks side by side: no copy
        self.pending, self.pending_bytes = [], 0
        if self.writer is not None and (self.written >= self.shard_bytes or table.schema != self.schema):
            self._close_file()
        if self.writer is None:
            path = posixpath.join(self.directory, SHARD_NAME.format(prefix=self.prefix, index=len(self.files)))
            tensors = [f.name for f in table.schema if _is_tensor(f.type)]
            others = [f.name for f in table.schema if f.name not in tensors]
            self.filesystem.create_dir(self.directory, recursive=True)
            # float tensors neither dictionary-encode nor compress (measured: same size, more time)
            compression = {name: "none" if name in tensors else "snappy" for name in table.schema.names}
            self.writer = pq.ParquetWriter(path, table.schema, filesystem=self.filesystem, use_dictionary=others,
                                           write_statistics=others, compression=compression)
            self.schema = table.schema
            self.files.append(path)
        self.writer.write_table(table, row_group_size=table.num_rows)  # one row group per flush
        self.written += table.nbytes

    def close(self) -> list[str]:
        """Write what is pending and close the open file; returns the files written."""
        self.flush()
        self._close_file()
        return self.files

    def abandon(self) -> None:
        """After a failed write: close what is open and remove this attempt's files, as far as the
        storage lets us (what stays is never committed, and removed by the next run)."""
        self.pending, self.pending_bytes = [], 0
        try:
            if self.writer is not None:
                self.writer.close()
        except Exception:  # noqa: BLE001 - the storage that failed may fail again
            pass
        self.writer, self.schema, self.written = None, None, 0
        for path in self.files:
            try:
                self.filesystem.delete_file(path)
            except Exception:  # noqa: BLE001
                pass

    def _close_file(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.writer, self.schema, self.written = None, None, 0


def _is_tensor(arrow_type) -> bool:
    import pyarrow as pa

    return isinstance(arrow_type, pa.ExtensionType)
