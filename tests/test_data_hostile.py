"""Hostile and faulty files against the per-file budget (unit tests: readers and `process_file`
called directly, no Ray): what a file declares is checked before it is allocated, pickles build
arrays only from their data, decompression is bounded, reasons stay short, and a file that runs too
long or grows too large is stopped as that file's rejection."""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from physiofm.data import RecordingRejected, bad_files, read_trials, storage, synthetic
from physiofm.data.budget import FileBudget
from physiofm.data.limits import FileGuard, resident_bytes
from physiofm.data.pipeline import InputFile, process_file
from physiofm.data.presets import Preset, get_preset
from physiofm.data.readers.deap_pickle import ForbiddenGlobal, PickleBomb, restricted_loads
from tests.conftest import REPO_ROOT

EEG_SHORT = {"min_duration_s": 0, "trim_s": 0, "window_s": 10}
MIB = 2**20
# Bounds on decoding work are in this process's CPU time (a wall clock on a shared host measures the host).


def process(path, preset="cbramod-eeg", budget: FileBudget | None = None, guard=None, **options):
    recipe = preset if isinstance(preset, Preset) else get_preset(preset, **options)
    item = InputFile(str(path), "auto", Path(path).stat().st_size)
    return process_file(item, recipe, storage.RetryPolicy(attempts=1), {}, budget=budget, guard=guard)


@pytest.fixture(scope="module")
def tueg_file(tmp_path_factory):
    return synthetic.write_tueg(tmp_path_factory.mktemp("tueg"), n_subjects=1, duration_s=20.0)[0]


def grows_by(function) -> tuple[object, int]:
    """(result, growth of this process's resident memory in bytes while `function` ran)."""
    before = resident_bytes()
    result = function()
    return result, resident_bytes() - before


# ---------------------------------------------------------------- what EDF/BDF/WFDB headers declare

@pytest.mark.parametrize("record_s", [3000, 20000, 9999999999])
def test_an_edf_whose_records_declare_hours_is_rejected_before_decoding(tueg_file, tmp_path, record_s):
    """20 one-second records stretched to `record_s` each: 0.08 Hz ... 2.5e-8 Hz signals that the
    preset would upsample to 200 Hz (3.7 GiB and more), once accepted as 1000 garbage windows."""
    path = bad_files.stretched_edf(tueg_file, tmp_path / "stretched.edf", record_s)
    started = time.process_time()
    (_, row), grown = grows_by(lambda: process(path, **EEG_SHORT))
    assert row["status"] == "rejected" and row["reason_code"] == "sampling_rate", row["reason"]
    assert "outside the plausible range of eeg signals" in row["reason"] and len(row["reason"]) < 400
    assert grown < 64 * MIB and time.process_time() - started < 10


def test_a_budget_names_what_a_file_declares_against_the_limits(tueg_file):
    _, row = process(tueg_file, budget=FileBudget(max_recording_mib=0.25), **EEG_SHORT)
    assert row["reason_code"] == "too_large" and "more than the 256.0 KiB a recording may take" in row["reason"]
    _, row = process(tueg_file, budget=FileBudget(rates_hz={"eeg": (300.0, 1000.0), "other": (0.1, 1e5)}),
                     **EEG_SHORT)
    assert row["reason_code"] == "sampling_rate" and "declares 250 Hz, outside the plausible range" in row["reason"]
    _, row = process(tueg_file, budget=FileBudget(max_upsampling=0.5), **EEG_SHORT)
    assert row["reason_code"] == "sampling_rate" and "budget max_upsampling" in row["reason"]
    _, row = process(tueg_file, **EEG_SHORT)  # the defaults leave a real recording alone
    assert row["status"] == "ok" and row["n_windows"] == 2


def test_a_wfdb_record_at_an_implausible_rate_is_rejected_before_resampling(tmp_path):
    header = synthetic.write_ptbxl(tmp_path, n_records=1)[0]
    text = header.read_text().splitlines()
    text[0] = text[0].replace(" 500 ", " 0.01 ")  # 5000 samples at 0.01 Hz: 139 h at 200 Hz
    header.write_text("\n".join(text) + "\n")
    (_, row), grown = grows_by(lambda: process(header, preset="ecg"))
    assert row["reason_code"] == "sampling_rate" and "declares 0.01 Hz" in row["reason"], row["reason"]
    assert grown < 64 * MIB


def test_a_master_header_naming_one_segment_thousands_of_times_is_rejected_fast(tmp_path):
    """8000 segments in a 120-KB header, all one 2-s segment: 4.4 h declared from 24 KB on disk."""
    master = bad_files.wfdb_repeated_segments(tmp_path, repeats=8000)
    started = time.process_time()
    _, row = process(master, preset="ecg")
    assert row["reason_code"] == "too_large" and "8000 segments, 1 distinct" in row["reason"], row["reason"]
    assert "budget max_expansion" in row["reason"] and time.process_time() - started < 20


def test_a_dreamer_file_with_a_garbled_rate_is_rejected_before_resampling(tmp_path):
    import scipy.io

    path = synthetic.write_dreamer(tmp_path, n_subjects=1, n_trials=1, stimulus_s=4.0)
    path = path if isinstance(path, Path) else Path(path[0] if isinstance(path, list) else path)
    content = scipy.io.loadmat(path)
    content["DREAMER"][0, 0]["ECG_SamplingRate"][0, 0] = 0.001
    scipy.io.savemat(path, {"DREAMER": content["DREAMER"]})
    with pytest.raises(RecordingRejected, match=r"signal 'ECG' declares 0\.001 Hz, outside the plausible range") as error:
        read_trials(str(path))
    assert error.value.code == "sampling_rate"


# ---------------------------------------------------------------- pickles: arrays only with their data

class _Call:
    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def py2_pickle(content) -> bytes:
    """`content` pickled as Python 2 wrote DEAP's files: protocol 2, bytes as BINSTRING (text)."""

    class Pickler(pickle._Pickler):
        dispatch = dict(pickle._Pickler.dispatch)

        def save_bytes(self, obj):
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj if len(obj) > 255
                       else pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
            self.memoize(obj)

        dispatch[bytes] = save_bytes

    sink = io.BytesIO()
    Pickler(sink, protocol=2).dump(content)
    return sink.getvalue()


def test_the_unpickler_reads_every_protocol_numpy_writes_and_python_2_pickles():
    content = {"data": np.random.default_rng(0).standard_normal((2, 40, 900)).astype(np.float32),
               "labels": np.arange(8.0).reshape(2, 4), "scalar": np.float64(2.5), "plain": [1, (2.0, "x"), {3}]}
    for raw in [pickle.dumps(content, protocol=p) for p in range(6)] + [py2_pickle(content)]:
        out = restricted_loads(raw)
        assert np.array_equal(out["data"], content["data"]) and out["data"].dtype == np.float32
        assert np.array_equal(out["labels"], content["labels"]) and out["scalar"] == 2.5
        assert out["plain"] == [1, (2.0, "x"), {3}]


HOSTILE = {  # name: (pickle, exception, what the message says)
    "uninitialised array": (pickle.dumps({"data": _Call(np.ndarray, ((1, 40, 5_000_000),))}, protocol=2),
                            PickleBomb, "uninitialised array"),
    "bytearray(2 GiB)": (pickle.dumps(_Call(bytearray, (2**31,)), protocol=2), PickleBomb, "an int would allocate"),
    "bytes(2 GiB)": (pickle.dumps(_Call(bytes, (2**31,)), protocol=4), PickleBomb, "an int would allocate"),
    "_reconstruct with a shape": (pickle.dumps(np.zeros(3), protocol=2).replace(b"K\x00\x85", b"J\x00\xe1\xf5\x05\x85"),
                                  PickleBomb, "an array without its data"),
    "array state without its data": (pickle.dumps(np.zeros(4), protocol=2).replace(b"K\x04\x85", b"J\x00\xe1\xf5\x05\x85"),
                                     PickleBomb, "needs 800000000 bytes of data, the pickle holds 32"),
    "a length beyond the stream": (b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc", PickleBomb,
                                   "declares 1099511627776 bytes, 3 remain"),
    "ndarray.__new__": (b"\x80\x02cnumpy\nndarray\nJ@KL\x00\x85\x81.", ForbiddenGlobal, "opcode NEWOBJ"),
    "bytes.__new__(2 GiB)": (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x80\x85\x81.", ForbiddenGlobal,
                             "opcode NEWOBJ"),
    "object array": (pickle.dumps(np.array([1, "a"], dtype=object), protocol=2), ForbiddenGlobal,
                     "only numeric dtypes"),
    "tuple of a long text": (pickle.dumps(_Call(tuple, ("y" * 100_000,)), protocol=2), PickleBomb, "only of containers"),
    "str of a nested object": (pickle.dumps(_Call(str, (((), ()),)), protocol=2), PickleBomb, r"str\(\) of .*: only str, bytes"),
    "os.system": (pickle.dumps(_Call(os.system, ("true",)), protocol=2), ForbiddenGlobal, "forbidden global"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_pickle_that_would_allocate_what_it_does_not_hold_is_refused(name):
    raw, exception, message = HOSTILE[name]
    assert len(raw) < 1000 or name == "tuple of a long text"
    (_, grown) = grows_by(lambda: pytest.raises(exception, restricted_loads, raw))
    with pytest.raises(exception, match=message):
        restricted_loads(raw)
    assert grown < 64 * MIB


def test_what_a_pickle_allocates_is_bounded_by_its_own_length():
    """One 1-MB text encoded 200 times by memo references: 200 MB from a 1-MB file."""
    text = "x" * 1_000_000
    body = pickle.dumps(text, protocol=2)[2:-1]  # the text's opcodes (memoized as 0)
    call = b"c_codecs\nencode\nq\x01"
    items = b"".join(b"h\x01h\x00U\x06latin1\x86R" for _ in range(200))
    raw = b"\x80\x02" + body + call + b"(" + items + b"l."
    with pytest.raises(PickleBomb, match="more than .* for a file of"):
        restricted_loads(raw)


def test_deap_bombs_end_as_short_rejections(tmp_path):
    cases = {
        "uninitialised.dat": (bad_files.deap_uninitialised, "too_large", "uninitialised array"),
        "bytearray.dat": (bad_files.deap_allocating_builtin, "too_large", "an int would allocate"),
        "nested.dat": (bad_files.deap_nested_key, "hostile_pickle", r"a dict key or set item of type tuple"),
    }
    for name, (write, code, pattern) in cases.items():
        path = write(tmp_path / name)
        assert path.stat().st_size < 400
        started = time.process_time()
        (_, row), grown = grows_by(lambda: process(path))
        assert row["reason_code"] == code and re.search(pattern, row["reason"]), row["reason"]
        assert len(row["reason"]) <= 400 and time.process_time() - started < 5 and grown < 64 * MIB


# ---------------------------------------------------------------- .mat: decompression bounded

def test_a_zlib_bomb_mat_is_rejected_before_it_inflates(tmp_path):
    """2 GiB of zeros in a 2-MB SEED-layout file: once 680 all-zero windows at 4.4 GiB of memory."""
    path = bad_files.mat_zlib_bomb(tmp_path / "djc_20140101.mat", inflated_mib=2048)
    assert path.stat().st_size < 3 * MIB
    started = time.process_time()  # CPU time: a busy host must not fail it, an inflating reader would
    (_, row), grown = grows_by(lambda: process(path, preset="scmm-de"))
    assert row["reason_code"] == "too_large" and "inflate to more than" in row["reason"], row["reason"]
    # 3 s: the bounded check takes ~0.4 s; scipy listing the variables first inflated all 2 GiB (~7 s)
    assert grown < 64 * MIB and time.process_time() - started < 3
    small = bad_files.mat_zlib_bomb(tmp_path / "small" / "djc_20140101.mat", inflated_mib=8)  # within the floor
    _, row = process(small, preset="scmm-de")
    assert row["reason_code"] != "too_large"


def test_a_label_file_of_millions_of_values_gives_a_short_reason(tmp_path):
    """A SEED label.mat of 4 million labels (32 KB on disk) gave a 30-MB reason and a 25-MB manifest."""
    session = bad_files.seed_label_bomb(tmp_path / "bomb", values=4_000_000)
    _, row = process(session, preset="scmm-de")
    assert row["reason_code"] == "too_large" and len(row["reason"]) <= 400, row["reason"][:500]
    session = bad_files.seed_label_bomb(tmp_path / "many", values=200_000)  # under the decompression floor
    _, row = process(session, preset="scmm-de")
    assert row["reason_code"] == "dataset_layout" and "(200000 values)" in row["reason"], row["reason"][:500]
    assert len(row["reason"]) <= 400 and len(row["notes"]) < 20_000


# ---------------------------------------------------------------- reasons and notes stay short

@dataclass(frozen=True)
class Says:
    """A step that rejects with a long reason and notes a lot (as a library's message might)."""

    chars: int

    def __call__(self, rec):
        raise RecordingRejected("x" * self.chars, "dataset_layout")


def test_reasons_and_notes_are_cut_to_the_budget(tueg_file):
    recipe = get_preset("cbramod-eeg", **EEG_SHORT)
    _, row = process(tueg_file, preset=Preset("long", (Says(10_000_000), *recipe.steps), recipe.windows))
    assert row["reason_code"] == "dataset_layout" and len(row["reason"]) == 400
    assert row["reason"].endswith("... [10000000 characters]")
    _, row = process(tueg_file, preset=Preset("long", (Says(1000), *recipe.steps), recipe.windows),
                     budget=FileBudget(max_reason_chars=120))
    assert len(row["reason"]) == 120


# ---------------------------------------------------------------- run-time limits: time and memory

@dataclass(frozen=True)
class Spins:
    """A step that computes in Python for `seconds` (a pathological file's slow path)."""

    seconds: float

    def __call__(self, rec):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            pass
        return rec


@dataclass(frozen=True)
class Grows:
    """A step that allocates `mib` MiB in 8-MiB pieces (a decoder's appetite no header declares)."""

    mib: int

    def __call__(self, rec):
        pieces = [np.ones(MIB, dtype=np.float64) for _ in range(self.mib // 8)]
        return rec if len(pieces) < 0 else rec


def test_a_file_past_the_time_limit_is_rejected_and_the_next_file_goes_on(tueg_file):
    guard = FileGuard(seconds_per_file=0.5, memory_bytes=None)
    recipe = get_preset("cbramod-eeg", **EEG_SHORT)
    started = time.perf_counter()
    _, row = process(tueg_file, preset=Preset("slow", (Spins(60), *recipe.steps), recipe.windows), guard=guard)
    assert row["reason_code"] == "too_slow" and "longer than 0.5 s" in row["reason"], row["reason"]
    assert time.perf_counter() - started < 5
    _, row = process(tueg_file, preset=recipe, guard=guard)
    assert row["status"] == "ok" and row["n_windows"] == 2


def test_a_file_past_the_memory_limit_is_rejected_and_its_memory_freed(tueg_file):
    guard = FileGuard(seconds_per_file=60, memory_bytes=resident_bytes() + 300 * MIB)
    recipe = get_preset("cbramod-eeg", **EEG_SHORT)
    _, row = process(tueg_file, preset=Preset("big", (Grows(2048), *recipe.steps), recipe.windows), guard=guard)
    assert row["reason_code"] == "too_large" and row["reason"].startswith("needs more than"), row["reason"]
    assert resident_bytes() < guard.memory + 100 * MIB and guard.peak < guard.memory + 200 * MIB
    _, row = process(tueg_file, preset=recipe, guard=guard)
    assert row["status"] == "ok"


HARD_STOP = """
import sys, time
from pathlib import Path
from physiofm.data.limits import FileGuard
marker = Path(sys.argv[1])
guard = FileGuard(seconds_per_file=0.3, memory_bytes=None, on_hard_stop=lambda path, reason, code: marker.write_text(
    f"{time.monotonic() - started}|{path}|{code}|{reason}"))
guard.grace_s = 0.5
started = time.monotonic()
with guard.watch("native.edf"):
    time.sleep(30)  # one native call: no Python instruction for the raised limit to land on
"""


def test_a_limit_that_cannot_be_raised_into_the_file_ends_the_process_naming_the_file(tmp_path):
    marker = tmp_path / "stopped"
    proc = subprocess.run([sys.executable, "-c", HARD_STOP, str(marker)], cwd=REPO_ROOT, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 70, proc.stderr  # not 0: the 30-s call never returned
    stopped_after, path, code, reason = marker.read_text().split("|", 3)
    assert float(stopped_after) < 10  # from the file's start (imports excluded): limit 0.3 s + grace 0.5 s
    assert (path, code) == ("native.edf", "too_slow") and "longer than 0.3 s" in reason


# ---------------------------------------------------------------- storage errors are not the file's

def test_a_storage_error_reading_a_file_is_retryable_and_not_blamed_on_it(tueg_file, monkeypatch):
    import errno

    from physiofm.data.readers import edf_files

    for code in (errno.EACCES, errno.EIO, errno.ENOSPC):
        def denied(path, kind, code=code):
            raise OSError(code, os.strerror(code), path)

        monkeypatch.setattr(edf_files, "parse_edf_header", denied)
        _, row = process(tueg_file, **EEG_SHORT)
        assert row["reason_code"] == "storage" and row["retryable"], row["reason"]
        assert row["reason"].startswith(f"storage: reading {tueg_file.name}: {os.strerror(code)} "
                                        f"[{errno.errorcode[code]}]")
    json.dumps(row)


def test_a_key_that_takes_exponential_time_to_hash_is_refused_before_it_is_hashed():
    """A tuple nested 40 times through itself: ~500 bytes, 2**40 steps to hash (in C, unstoppable).
    The pickles are written opcode by opcode: building them in Python would hash the key."""
    key: tuple = ()
    for _ in range(40):
        key = (key, key)
    k = pickle.dumps(key, protocol=2)[2:-1]  # the key's opcodes (memoised), no PROTO, no STOP
    one, labels = b"K\x01", b"X\x06\x00\x00\x00labels"
    raws = {"SETITEMS": b"\x80\x02}(" + labels + one + k + one + b"u.", "SETITEM": b"\x80\x02}" + k + one + b"s.",
            "DICT": b"(" + k + one + b"d.", "ADDITEMS": b"\x80\x04\x8f(" + k + b"\x90.",
            "FROZENSET": b"\x80\x04(" + k + b"\x91.", "frozenset()": pickle.dumps(_Call(frozenset, ([key],)), protocol=2),
            "dict()": pickle.dumps(_Call(dict, ([(key, 1)],)), protocol=2)}
    for opcode, raw in raws.items():
        started = time.process_time()
        with pytest.raises(ForbiddenGlobal, match="of type tuple: only plain values"):
            restricted_loads(raw)
        assert time.process_time() - started < 1, opcode
    assert restricted_loads(pickle.dumps({"labels": 1, 2: {3.0, "a"}}, protocol=0)) == {"labels": 1, 2: {3.0, "a"}}
    assert restricted_loads(b"\x80\x02}(" + labels + one + b"X\x01\x00\x00\x00a" + one + b"u.") == {"labels": 1, "a": 1}
