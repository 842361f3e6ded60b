"""Never lose or invent data (unit tests: CorpusLayout, the output lock, listing and the loader
called directly, no Ray): only the pipeline's own files are removed, an output over an input or
holding someone else's files is refused, one run per output, atomic writes, damaged commits set
aside, each file listed once, and no pickled column ever read."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from physiofm.data import storage, synthetic
from physiofm.data.corpus import CorpusLayout
from physiofm.data.inputs import list_inputs
from physiofm.data.loader import read_windows, training_dataset
from physiofm.data.output import OutputBusy, OutputLock
from physiofm.data.pipeline import prepare_corpus, rejected_row
from physiofm.data.shards import new_prefix
from tests.conftest import REPO_ROOT


@contextlib.contextmanager
def small_filesystem(folder: Path, size: str):
    """A tmpfs of `size` mounted at `folder` (root only; skips otherwise), unmounted after."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def make_ours(layout: CorpusLayout) -> None:
    layout.write_json(layout.config_json, {"preset": {"name": "t"}, "format": "auto"})


def touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------- refused outputs

def test_an_output_over_an_input_is_refused_before_anything_is_written(tmp_path):
    raw = tmp_path / "raw"
    synthetic.write_ptbxl(raw, n_records=1)
    (tmp_path / "link").symlink_to(raw)
    for output in (raw, raw / "out", tmp_path / "link" / "out", tmp_path):
        with pytest.raises(ValueError, match="a run would read its own windows as recordings"):
            prepare_corpus([str(raw)], str(output), preset="ecg")
    assert not (raw / "out").exists() and not (raw / "_progress").exists() and not (tmp_path / "_progress").exists()


def test_an_output_holding_files_physiofm_did_not_write_is_refused_and_left_alone(tmp_path):
    study = tmp_path / "study"
    readme = touch(study / "windows" / "README.txt", b"notes of the study\n")
    recording = touch(study / "windows" / "rec_from_window_study.edf", b"0       " + b" " * 248)
    with pytest.raises(ValueError, match=r"holds windows that physiofm has no record of writing"):
        prepare_corpus([str(tmp_path / "elsewhere")], str(study), preset="ecg")
    assert readme.read_bytes() == b"notes of the study\n" and recording.exists()
    assert sorted(p.name for p in study.rglob("*")) == ["README.txt", "rec_from_window_study.edf", "windows"]


def test_only_the_pipelines_own_window_files_are_ever_removed(tmp_path):
    layout = CorpusLayout(str(tmp_path / "out"))
    make_ours(layout)
    execution, committed = new_prefix(), new_prefix()
    layout.record_execution(execution)
    windows = tmp_path / "out" / "windows"
    leftover = touch(windows / f"{execution}-0badf00d_00000.parquet")  # ours, never committed
    kept = touch(windows / f"{committed}-12345678_00000.parquet")  # committed
    unrecorded = touch(windows / f"{new_prefix()}-87654321_00000.parquet")  # our naming, no record of writing it
    foreign = [touch(windows / "README.txt"), touch(windows / "rec.edf"), touch(windows / "notes_00000.parquet")]
    layout.commit(f"{new_prefix()}-00001", [{**rejected_row(_item("a.edf")), "status": "ok", "n_windows": 1,
                                             "commit": f"{committed}-12345678"}])
    removed = layout.remove_uncommitted_windows({f"{committed}-12345678"})
    assert removed == [leftover.name] and kept.exists() and unrecorded.exists() and all(p.exists() for p in foreign)
    assert sorted(layout.foreign_files({f"{committed}-12345678"})) == sorted(
        [unrecorded.name, *(p.name for p in foreign)])
    layout.reset()  # overwrite: what the pipeline wrote goes, nothing else
    assert not kept.exists() and unrecorded.exists() and all(p.exists() for p in foreign)
    assert not (tmp_path / "out" / "_progress" / "config.json").exists()


def _item(name: str):
    from physiofm.data.inputs import InputFile

    return InputFile(name, "auto", 1)


# ---------------------------------------------------------------- one writer per output

def test_a_second_run_on_the_same_output_fails_fast_naming_the_first(tmp_path):
    raw = tmp_path / "raw"
    synthetic.write_ptbxl(raw, n_records=1)
    output = tmp_path / "out"
    with OutputLock(str(output / "_progress")) as first:
        started = time.perf_counter()
        with pytest.raises(OutputBusy, match=rf"another run is preparing {output} \({first.owner}"):
            prepare_corpus([str(raw)], str(output), preset="ecg")
        assert time.perf_counter() - started < 3
    with OutputLock(str(output / "_progress")):  # released: the next run may take it
        pass


def test_the_lock_of_a_killed_run_is_released_with_it(tmp_path):
    code = ("import sys, time; from physiofm.data.output import OutputLock; "
            "lock = OutputLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "_progress")], cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(OutputBusy):
        OutputLock(str(tmp_path / "_progress")).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    lock = OutputLock(str(tmp_path / "_progress"))
    lock.acquire()
    lock.release()


def test_a_lease_guards_an_output_on_object_storage(s3_bucket):
    progress = storage.join(s3_bucket, "out", "_progress")
    first = OutputLock(progress, ttl_s=2.0)
    first.acquire()
    try:
        with pytest.raises(OutputBusy, match=r"another run is preparing .*out .*lease renewed"):
            OutputLock(progress, ttl_s=2.0).acquire()
        time.sleep(2.5)  # the holder renews it: still held
        with pytest.raises(OutputBusy):
            OutputLock(progress, ttl_s=2.0).acquire()
    finally:
        first.release()
    second = OutputLock(progress, ttl_s=2.0)
    second.acquire()  # released: free
    second._stop.set()  # the holder "crashes": its lease is no longer renewed
    second._renewer.join()
    time.sleep(2.5)
    third = OutputLock(progress, ttl_s=2.0)
    third.acquire()  # an expired lease is taken over
    third.release()


# ---------------------------------------------------------------- atomic writes, damaged commits

def test_a_truncated_commit_is_named_and_set_aside_not_fatal(tmp_path):
    layout = CorpusLayout(str(tmp_path / "out"))
    make_ours(layout)
    layout.commit(f"{new_prefix()}-00001", [rejected_row(_item("a.edf"), "r", "unreadable")])
    name = f"{new_prefix()}-00002"
    layout.commit(name, [rejected_row(_item(f"{c}.edf"), "r", "unreadable") for c in "bcdefgh"])
    commit = tmp_path / "out" / "_progress" / f"{name}.parquet"
    commit.write_bytes(commit.read_bytes()[:300])  # what a crash mid-write left (ArrowInvalid: no magic bytes)
    rows = CorpusLayout(str(tmp_path / "out")).committed_rows()
    assert [r["path"] for r in rows] == ["a.edf"]
    again = CorpusLayout(str(tmp_path / "out"))
    assert again.committed_rows() == rows and again.set_aside == []  # set aside once, named then
    assert (commit.parent / f"{name}.parquet.corrupt").stat().st_size == 300 and not commit.exists()


def test_writes_a_resume_relies_on_are_atomic_on_a_full_disk(tmp_path):
    with small_filesystem(tmp_path / "small", "1m") as disk:
        target = disk / "manifest.parquet"
        storage.write_bytes(str(target), b"old content")
        with pytest.raises(OSError) as error:
            storage.write_bytes(str(target), os.urandom(2 << 20))  # more than the disk holds
        assert error.value.errno == errno.ENOSPC
        assert target.read_bytes() == b"old content" and sorted(p.name for p in disk.iterdir()) == ["manifest.parquet"]


# ---------------------------------------------------------------- each file listed once

def test_a_file_reached_through_several_names_is_listed_once_with_its_bytes_once(tmp_path):
    edf = synthetic.write_tueg(tmp_path / "raw" / "tueg", n_subjects=1, duration_s=10.0)[0]
    header = synthetic.write_ptbxl(tmp_path / "raw" / "ptb", n_records=1)[0]
    (tmp_path / "raw" / "link1.edf").symlink_to(edf)
    (tmp_path / "raw" / "link2.edf").symlink_to(edf)
    (tmp_path / "raw" / "tuegdir").symlink_to(tmp_path / "raw" / "tueg")
    (tmp_path / "raw" / "tueg" / "loop").symlink_to(tmp_path / "raw")  # a cycle
    record_bytes = header.stat().st_size + header.with_suffix(".dat").stat().st_size
    raw = str(tmp_path / "raw")
    for inputs in ([raw], [raw, raw + "/", f"file://{raw}"], [str(header), raw, str(header.with_suffix(".dat"))]):
        items, _ = list_inputs(inputs)
        assert [i.path for i in items] == [str(header), str(edf)], inputs
        assert [i.bytes for i in items] == [record_bytes, edf.stat().st_size], inputs


# ---------------------------------------------------------------- reading never unpickles

def test_a_corpus_with_a_pickled_column_is_read_without_unpickling_it(tmp_path):
    import ray.data  # noqa: F401 - registers Ray's extension types, as a training job would
    from ray.data._internal.object_extensions.arrow import ArrowPythonObjectArray

    marker = tmp_path / "payload-ran"
    layout = CorpusLayout(str(tmp_path / "out"))
    make_ours(layout)
    prefix = f"{new_prefix()}-12345678"
    payload = ArrowPythonObjectArray.from_objects([_Opens(str(marker))])
    table = pa.table({"window_index": pa.array([0], pa.int64()), "x": pa.array([[1.0, 2.0]]), "extra": payload})
    (tmp_path / "out" / "windows").mkdir()
    pq.write_table(table, tmp_path / "out" / "windows" / f"{prefix}_00000.parquet")
    rows = [{**rejected_row(_item("a.edf")), "status": "ok", "n_windows": 1, "commit": prefix, "shapes": "{}"}]
    layout.write_manifest(rows)
    layout.write_json(layout.corpus_json, {"counts": {"windows": 1, "rejected": 0}})
    windows = read_windows(str(tmp_path / "out"))
    assert sorted(windows) == ["window_index", "x"] and not marker.exists()
    with pytest.raises(ValueError, match=r"\['extra'\] .* hold pickled Python objects"):
        read_windows(str(tmp_path / "out"), columns=["x", "extra"])
    with pytest.raises(ValueError, match=r"\['extra'\] .* hold pickled Python objects"):
        training_dataset(str(tmp_path / "out"), columns=["extra"])
    assert not marker.exists()


class _Opens:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")
