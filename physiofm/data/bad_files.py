"""Bad inputs for robustness tests: each helper writes one kind of damaged or hostile file."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np


def truncated(source: str | Path, target: str | Path, keep: float = 0.5) -> Path:
    """A copy of `source` cut to `keep` of its bytes (a failed upload, a full disk)."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: int(len(data) * keep)])
    return Path(target)


def bit_flipped(source: str | Path, target: str | Path, offsets: tuple[int, ...] = (236, 237, 252)) -> Path:
    """A copy with the bytes at `offsets` inverted (default: an EDF header's record count and
    signal count, so the damage is detectable; flips inside samples cannot be told from signal)."""
    data = bytearray(Path(source).read_bytes())
    for offset in offsets:
        data[offset] ^= 0xFF
    Path(target).write_bytes(bytes(data))
    return Path(target)


def empty(target: str | Path) -> Path:
    Path(target).write_bytes(b"")
    return Path(target)


def wrong_extension(source: str | Path, target: str | Path) -> Path:
    """`source`'s bytes under a name whose extension promises another format."""
    shutil.copyfile(source, target)
    return Path(target)


def nan_record(folder: str | Path, name: str = "nan_record", seconds: float = 10.0, sfreq: float = 500.0) -> Path:
    """A 12-lead WFDB record whose every sample is the format's invalid value (reads as NaN)."""
    import wfdb

    from physiofm.data.channels import ECG_12

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.full((int(seconds * sfreq), len(ECG_12)), np.nan)
    wfdb.wrsamp(name, fs=sfreq, units=["mV"] * 12, sig_name=list(ECG_12), p_signal=signal, fmt=["16"] * 12,
                adc_gain=[1000.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    return folder / f"{name}.hea"


class _WouldRun:
    """Pickles as a call to builtins.open(marker, 'w'): loading it with pickle.load creates `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def hostile_pickle(target: str | Path, marker: str | Path) -> Path:
    """A DEAP-shaped `.dat` whose 'data' entry runs code when unpickled (it would create `marker`)."""
    content = {"data": _WouldRun(str(marker)), "labels": np.ones((1, 4))}
    Path(target).write_bytes(pickle.dumps(content, protocol=2))
    return Path(target)


def nan_filled_deap(target: str | Path, n_trials: int = 1) -> Path:
    """A DEAP-shaped `.dat` whose signals are all NaN (a failed export)."""
    content = {"data": np.full((n_trials, 40, 8064), np.nan, dtype=np.float32), "labels": np.ones((n_trials, 4))}
    Path(target).write_bytes(pickle.dumps(content, protocol=2))
    return Path(target)


# ---------------------------------------------------------------- memory bombs (what a file declares)

def stretched_edf(source: str | Path, target: str | Path, record_s: float) -> Path:
    """A copy of an EDF/BDF whose data records declare `record_s` seconds each: the same bytes hold
    signals at a rate `record_s` / (the real duration) times lower (3000 s: 0.08 Hz for 250 samples)."""
    data = bytearray(Path(source).read_bytes())
    data[244:252] = f"{record_s:g}".encode().ljust(8)[:8]
    Path(target).write_bytes(bytes(data))
    return Path(target)


class _Call:
    """Pickles as `function(*args)`."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def deap_uninitialised(target: str | Path, shape: tuple[int, ...] = (1, 40, 5_000_000)) -> Path:
    """A DEAP-shaped `.dat` whose 'data' is `numpy.ndarray(shape)`: an uninitialised array of any
    size from a few bytes."""
    content = {"data": _Call(np.ndarray, (shape,)), "labels": np.ones((shape[0], 4))}
    Path(target).write_bytes(pickle.dumps(content, protocol=2))
    return Path(target)


def deap_allocating_builtin(target: str | Path, size: int = 2**31, kind: type = bytearray) -> Path:
    """A pickle of `bytearray(size)` (or `bytes(size)`): `size` bytes from a few dozen."""
    Path(target).write_bytes(pickle.dumps({"data": _Call(kind, (size,)), "labels": None}, protocol=2))
    return Path(target)


def deap_nested_key(target: str | Path, depth: int = 25) -> Path:
    """A DEAP-like dict whose key is a tuple nested `depth` times through itself: a few hundred
    bytes whose text is 3 x 2**depth characters."""
    key: tuple = ()
    for _ in range(depth):
        key = (key, key)
    Path(target).write_bytes(pickle.dumps({key: 1, "labels": np.ones((1, 4))}, protocol=2))
    return Path(target)


def _mat_element(name: str, rows: int, cols: int, fill: bytes = b"\0" * 8) -> bytes:
    """A zlib-compressed MATLAB 5 double matrix `name` (rows x cols) of one repeated value. The
    repeated 1-MiB block is compressed once (full flushes make each block's deflate output the
    same) and the stream's checksum computed over what it inflates to: fast for gigabytes."""
    import struct
    import zlib

    data_bytes = 8 * rows * cols
    name_bytes = name.encode()
    padded_name = name_bytes + b"\0" * (-len(name_bytes) % 8)
    body = (struct.pack("<IIII", 6, 8, 6, 0) + struct.pack("<IIii", 5, 8, rows, cols)
            + struct.pack("<II", 1, len(name_bytes)) + padded_name + struct.pack("<II", 9, data_bytes))
    prefix = struct.pack("<II", 14, len(body) + data_bytes + (-data_bytes % 8)) + body
    chunk = fill * (1 << 17)  # 1 MiB of the value
    blocks, rest = divmod(data_bytes, len(chunk))
    tail = chunk[:rest] + b"\0" * (-data_bytes % 8)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: header and checksum written here
    out = [b"\x78\xda", deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)]
    if blocks:
        block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
        out += [block] * blocks
    out.append(deflate.compress(tail) + deflate.flush())
    check = zlib.adler32(prefix)
    for _ in range(blocks):
        check = zlib.adler32(chunk, check)
    out.append(struct.pack(">I", zlib.adler32(tail, check)))
    compressed = b"".join(out)
    return struct.pack("<II", 15, len(compressed)) + compressed


def _mat_header() -> bytes:
    """The 128-byte header of a little-endian MATLAB 5 file."""
    text = b"MATLAB 5.0 MAT-file, written by physiofm.data.bad_files"
    return text.ljust(116, b" ") + b"\0" * 8 + b"\x00\x01IM"


def mat_zlib_bomb(target: str | Path, inflated_mib: float = 2048.0, subject: str = "djc") -> Path:
    """A SEED-layout `.mat` (15 trial variables of 62 channels) whose trials are zeros that zlib
    packs a thousandfold: `inflated_mib` MiB from about a thousandth of it on disk."""
    columns = max(1, int(inflated_mib * 2**20 / 8 / 62 / 15))
    header = _mat_header()
    elements = b"".join(_mat_element(f"{subject}_eeg{t}", 62, columns) for t in range(1, 16))
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(header + elements)
    return Path(target)


def seed_label_bomb(folder: str | Path, values: int = 4_000_000) -> Path:
    """A SEED folder (one small session file) whose `label.mat` holds `values` labels (compressed
    zeros: a few KB on disk) where 15 are expected."""
    from physiofm.data.synthetic import write_seed

    folder = Path(folder)
    session = write_seed(folder, trial_s=4.0)[0]
    (session.parent / "label.mat").write_bytes(_mat_header() + _mat_element("label", 1, values))
    return session


def wfdb_repeated_segments(folder: str | Path, repeats: int = 8000, name: str = "rep") -> Path:
    """A multi-segment WFDB master naming one 2-s segment `repeats` times: a few dozen KB of header
    declaring hours of signal from one small file."""
    import wfdb

    from physiofm.data.channels import ECG_12
    from physiofm.data.synthetic import ecg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fs, samples = 500, 1000
    signal = ecg(np.random.default_rng(0), 12, samples / fs, fs).T
    wfdb.wrsamp(f"{name}_0001", fs=fs, units=["mV"] * 12, sig_name=list(ECG_12), p_signal=signal, fmt=["16"] * 12,
                adc_gain=[200.0] * 12, baseline=[0] * 12, write_dir=str(folder))
    lines = [f"{name}/{repeats} 12 {fs} {repeats * samples}"] + [f"{name}_0001 {samples}"] * repeats
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.hea"
