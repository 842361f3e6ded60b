"""DEAP `data_preprocessed_python/sXX.dat`: a Python 2 pickle, read with a restricted unpickler.

A pickle runs code when loaded: only numpy arrays and plain builtin containers may be built, and
any other global (os.system, builtins.exec, ...) rejects the file before anything runs.
"""
from __future__ import annotations

import _compat_pickle
import codecs
import io
import pickle
from pathlib import Path

import numpy as np

from physiofm.data.budget import FileBudget, short
from physiofm.data.channels import DEAP_EEG_32, DEAP_PERIPHERAL
from physiofm.data.recording import Recording, RecordingRejected, error_text

SFREQ = 128.0
BASELINE_S = 3.0
N_CHANNELS = 40
LABEL_NAMES = ("valence", "arousal", "dominance", "liking")

# What a DEAP pickle may build: numpy arrays with their data (the pickles numpy writes with
# protocols 0-5), their dtypes and scalars, and plain builtin values. Every callable the pickle
# reaches is one of ours below, which checks its arguments before anything is allocated.
_NUMERIC_KINDS = "biufc"  # bool, integers, floats, complex: no object, string or structured dtypes
_SAFE_BUILTINS = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bytes",
                  "bytearray", "bool", "slice")
_OBJECT_BYTES = 8  # a container's cost per element (one pointer), counted against the budget


class ForbiddenGlobal(pickle.UnpicklingError):
    pass


class PickleBomb(pickle.UnpicklingError):
    """The pickle asks for more than its own bytes can hold (an array without its data, a declared
    length beyond the stream, allocations out of proportion to the file)."""


class _Stream(io.BytesIO):
    """The pickle's bytes: a read of more than what is left is a length the stream cannot hold."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.size = len(data)

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self.size - self.tell():
            raise PickleBomb(f"an opcode declares {n} bytes, {self.size - self.tell()} remain in the file")
        return super().read(n)


def _numeric_dtype(value, where: str) -> np.dtype:
    if not isinstance(value, np.dtype) or value.kind not in _NUMERIC_KINDS or value.fields is not None \
            or value.subdtype is not None:
        raise ForbiddenGlobal(f"{where}: only numeric dtypes may be unpickled, got {short(value, 60)}")
    return value


def _shape(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(n) is int and n >= 0 for n in value) or len(value) > 32:
        raise PickleBomb(f"{where}: the array shape {short(value, 60)} is not a tuple of sizes")
    return value


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: every opcode is ours to check
    """Builds numpy arrays only with their data, numeric dtypes and builtin values; any other global
    (os.system, builtins.exec, ...) or object-building opcode rejects the file before it runs.

    What the pickle's callables allocate is counted against `max_bytes` (default: a few times the
    stream's length): a 61-byte `bytearray(2**31)` or a 130-byte `ndarray((1, 40, 5e6))` cannot
    allocate what the file does not hold.
    """

    def __init__(self, data: bytes, encoding: str = "latin1", max_bytes: int | None = None):
        self.stream = _Stream(data)
        super().__init__(self.stream, encoding=encoding)
        self.max_bytes = max_bytes if max_bytes is not None else 4 * len(data) + (16 << 20)
        self.allocated = 0
        self.dispatch = dict(pickle._Unpickler.dispatch)
        for opcode in (pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2,
                       pickle.EXT4, pickle.PERSID, pickle.BINPERSID):
            self.dispatch[opcode[0]] = lambda self, op=opcode: self._forbidden_opcode(op)
        self.dispatch[pickle.BUILD[0]] = RestrictedUnpickler._load_build
        self.dispatch[pickle.REDUCE[0]] = RestrictedUnpickler._load_reduce
        for opcode, keys in ((pickle.SETITEM, _key_of_setitem), (pickle.SETITEMS, _keys_of_pairs),
                             (pickle.DICT, _keys_of_pairs), (pickle.ADDITEMS, _items), (pickle.FROZENSET, _items)):
            self.dispatch[opcode[0]] = _hashing_plain_keys(pickle._Unpickler.dispatch[opcode[0]], keys)

    def _forbidden_opcode(self, opcode: bytes):
        raise ForbiddenGlobal(f"pickle opcode {pickle_opcode_name(opcode)} (builds objects other than arrays) is "
                              "not allowed")

    def _charge(self, n: float, what: str) -> None:
        self.allocated += int(n)
        if self.allocated > self.max_bytes:
            raise PickleBomb(f"{what} brings what the pickle allocates to {self.allocated} bytes, more than "
                             f"{self.max_bytes} for a file of {self.stream.size} bytes")

    def find_class(self, module: str, name: str):
        if self.proto < 3:  # Python 2's names of the same builtins (unicode, long, ...)
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _CALLABLES:
            return _CALLABLES[key]
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _CALLABLES[("builtins", name)]
        raise ForbiddenGlobal(
            f"forbidden global {short(module, 60)[1:-1]}.{short(name, 60)[1:-1]} in pickle (only numpy arrays "
            "and builtin containers are allowed)")

    def _load_reduce(self):
        stack = self.stack
        args = stack.pop()
        func = stack[-1]
        if not isinstance(func, _Guarded) or not isinstance(args, tuple):
            raise ForbiddenGlobal(f"pickle calls {short(func, 60)}, which is not an allowed constructor")
        stack[-1] = func(self, *args)

    def _load_build(self):
        stack = self.stack
        state = stack.pop()
        inst = stack[-1]
        if isinstance(inst, np.ndarray):
            _set_array_state(self, inst, state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            _numeric_dtype(inst, "dtype state")
        else:
            raise ForbiddenGlobal(f"pickle sets the state of a {type(inst).__name__}; only arrays and dtypes have one")


_KEY_TYPES = (str, bytes, int, float, bool, complex, type(None))


def _plain_key(key) -> None:
    # Hashing a tuple hashes what it holds, every time: a key nested 40 times through itself is a
    # few hundred bytes that take 2**40 steps (in C, where no time limit can stop it) to hash.
    if not isinstance(key, _KEY_TYPES):
        raise ForbiddenGlobal(f"a dict key or set item of type {type(key).__name__}: only plain values (text, "
                              "numbers) are keys in a recording")


def _key_of_setitem(stack: list) -> list:
    return stack[-2:-1]  # (dict, key, value) end the stack


def _keys_of_pairs(stack: list) -> list:
    return stack[::2]  # SETITEMS, DICT: the stack holds the key/value pairs since the MARK


def _items(stack: list) -> list:
    return stack  # ADDITEMS, FROZENSET: the stack holds the items since the MARK


def _hashing_plain_keys(load, keys):
    """`load` (an opcode that hashes what it stores) once every key it would hash is plain."""
    def checked(self):
        for key in keys(self.stack):
            _plain_key(key)
        return load(self)
    return checked


def pickle_opcode_name(opcode: bytes) -> str:
    names = {getattr(pickle, n): n for n in ("NEWOBJ", "NEWOBJ_EX", "INST", "OBJ", "EXT1", "EXT2", "EXT4",
                                              "PERSID", "BINPERSID")}
    return names.get(opcode, repr(opcode))


class _Guarded:
    """A callable a pickle may reach: `check(unpickler, *args)` builds the value or refuses."""

    def __init__(self, name: str, build):
        self.name, self.build = name, build

    def __call__(self, unpickler: RestrictedUnpickler, *args):
        return self.build(unpickler, *args)

    def __repr__(self) -> str:
        return self.name


def _ndarray_called(unpickler, *args):
    raise PickleBomb(f"numpy.ndarray{short(args, 80)} called directly: an uninitialised array, not data")


_NDARRAY = _Guarded("numpy.ndarray", _ndarray_called)  # only ever the class argument of _reconstruct


def _reconstruct(unpickler, cls, shape, typecode):
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') followed by its state (BUILD)
    if cls is not _NDARRAY:
        raise ForbiddenGlobal(f"_reconstruct of {short(cls, 60)}: only numpy.ndarray is allowed")
    if _shape(shape, "_reconstruct") != (0,):
        raise PickleBomb(f"_reconstruct with shape {short(shape, 60)}: an array without its data")
    return np.ndarray((0,), dtype=np.uint8)


def _set_array_state(unpickler, array: np.ndarray, state) -> None:
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise PickleBomb(f"array state {short(state, 80)} is not (version, shape, dtype, fortran, data)")
    shape, dtype, data = state[-4], state[-3], state[-1]
    _shape(shape, "array state")
    _numeric_dtype(dtype, "array state")
    if not isinstance(data, (bytes, bytearray, str)):
        raise PickleBomb(f"array data is a {type(data).__name__}, not bytes")
    needed = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if len(data) != needed:  # a str here is Python 2's bytes decoded as latin-1: one character per byte
        raise PickleBomb(f"array of shape {shape} and dtype {dtype} needs {needed} bytes of data, the pickle holds "
                         f"{len(data)}")
    unpickler._charge(needed, f"an array of shape {shape}")
    array.__setstate__(state)


def _scalar(unpickler, dtype, data=None):
    _numeric_dtype(dtype, "scalar")
    if isinstance(data, str):
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise PickleBomb(f"a scalar of dtype {dtype} needs {dtype.itemsize} bytes, got {short(data, 40)}")
    return np.frombuffer(data, dtype=dtype)[0]


def _frombuffer(unpickler, buffer, dtype, shape, order, *rest):
    _numeric_dtype(dtype, "_frombuffer")
    _shape(shape, "_frombuffer")
    if not isinstance(buffer, (bytes, bytearray)):
        raise PickleBomb(f"_frombuffer of a {type(buffer).__name__}, not bytes")
    needed = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
    if len(buffer) != needed:
        raise PickleBomb(f"array of shape {shape} and dtype {dtype} needs {needed} bytes of data, the pickle holds "
                         f"{len(buffer)}")
    if order not in ("C", "F") or rest:
        raise PickleBomb(f"_frombuffer with order {short(order, 20)} and extra arguments {short(rest, 40)}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _dtype(unpickler, spec, align=False, copy=True):
    if not isinstance(spec, (str, bytes)) or len(spec) > 8:
        raise ForbiddenGlobal(f"dtype {short(spec, 40)}: only numeric type codes may be unpickled")
    # Always a copy: its state (BUILD) is set next, on this dtype only.
    return _numeric_dtype(np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec, copy=True), "dtype")


def _latin1_encode(unpickler, text, encoding="latin1", *errors):
    # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(text, 'latin1').
    if not isinstance(text, str) or not isinstance(encoding, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise ForbiddenGlobal(f"_codecs.encode of {type(text).__name__} with encoding {short(encoding, 30)}; only "
                              "latin-1 text is allowed")
    unpickler._charge(len(text), "_codecs.encode")
    return codecs.encode(text, "latin1")


def _bytes_like(kind):
    def build(unpickler, source=b"", encoding=None, *errors):
        # Never from an int (bytearray(2**31) allocates what no stream holds): only from data.
        if isinstance(source, str):
            if encoding is None or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8", "ascii"):
                raise ForbiddenGlobal(f"{kind.__name__}(str) with encoding {short(encoding, 30)}")
            unpickler._charge(len(source), kind.__name__)
            return kind(source, encoding)
        if isinstance(source, (bytes, bytearray)) or (isinstance(source, list) and all(
                type(v) is int for v in source)):
            unpickler._charge(len(source), kind.__name__)
            return kind(source)
        raise PickleBomb(f"{kind.__name__}() of a {type(source).__name__}: only from bytes, text or a list of "
                         "byte values (an int would allocate that many bytes)")
    return build


def _plain(kind, *allowed_args):
    def build(unpickler, *args):
        if len(args) > 2 or not all(isinstance(a, allowed_args) for a in args):
            raise PickleBomb(f"{kind.__name__}() of {short(args, 60)}: only {', '.join(t.__name__ for t in allowed_args)}")
        return kind(*args)
    return build


def _container(kind):
    def build(unpickler, *args):
        if len(args) > 1:
            raise PickleBomb(f"{kind.__name__}() with {len(args)} arguments")
        if args:
            if not isinstance(args[0], (list, tuple, dict, set, frozenset)):
                raise PickleBomb(f"{kind.__name__}() of a {type(args[0]).__name__}: only of containers")
            unpickler._charge(_OBJECT_BYTES * len(args[0]), kind.__name__)
            if kind in (set, frozenset):
                for item in args[0]:
                    _plain_key(item)
            elif kind is dict and not isinstance(args[0], dict):
                for pair in args[0]:
                    _plain_key(pair[0] if isinstance(pair, (tuple, list)) and pair else pair)
        return kind(*args)
    return build


_NUMBERS = (int, float, str, bytes)
_CALLABLES = {
    ("builtins", "dict"): _Guarded("dict", _container(dict)),
    ("builtins", "list"): _Guarded("list", _container(list)),
    ("builtins", "tuple"): _Guarded("tuple", _container(tuple)),
    ("builtins", "set"): _Guarded("set", _container(set)),
    ("builtins", "frozenset"): _Guarded("frozenset", _container(frozenset)),
    ("builtins", "int"): _Guarded("int", _plain(int, int, float, str, bytes)),
    ("builtins", "float"): _Guarded("float", _plain(float, int, float, str, bytes)),
    ("builtins", "complex"): _Guarded("complex", _plain(complex, int, float)),
    ("builtins", "bool"): _Guarded("bool", _plain(bool, int, bool)),
    ("builtins", "str"): _Guarded("str", _plain(str, str, bytes)),
    ("builtins", "slice"): _Guarded("slice", _plain(slice, int, type(None))),
    ("builtins", "bytes"): _Guarded("bytes", _bytes_like(bytes)),
    ("builtins", "bytearray"): _Guarded("bytearray", _bytes_like(bytearray)),
    ("_codecs", "encode"): _Guarded("_codecs.encode", _latin1_encode),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guarded("numpy.dtype", _dtype),
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _CALLABLES[(_module, "_reconstruct")] = _Guarded("numpy _reconstruct", _reconstruct)
    _CALLABLES[(_module, "scalar")] = _Guarded("numpy scalar", _scalar)
for _module in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol 5
    _CALLABLES[(_module, "_frombuffer")] = _Guarded("numpy _frombuffer", _frombuffer)


def restricted_loads(data: bytes, encoding: str = "latin1", max_bytes: int | None = None):
    return RestrictedUnpickler(data, encoding=encoding, max_bytes=max_bytes).load()


def read_deap(path: str, source: str, budget: FileBudget | None = None) -> list[Recording]:
    """40 trials of 60 s (the 3-s pre-trial baseline kept apart) with the four ratings."""
    budget = budget or FileBudget()
    raw = Path(path).read_bytes()
    if not raw:
        raise RecordingRejected("empty file (0 bytes)", "empty_file")
    try:
        content = restricted_loads(raw, max_bytes=min(4 * len(raw) + (16 << 20), budget.max_recording_bytes))
    except ForbiddenGlobal as error:
        raise RecordingRejected(f"hostile or foreign pickle rejected unexecuted: {error}", "hostile_pickle")
    except PickleBomb as error:
        raise RecordingRejected(f"pickle rejected before allocating: {error}", "too_large")
    except RecursionError:
        raise RecordingRejected("not a readable DEAP pickle: nested too deeply", "unreadable")
    except Exception as error:  # noqa: BLE001 - truncated/corrupt pickles fail in many ways
        raise RecordingRejected(f"not a readable DEAP pickle: {error_text(error)}", "unreadable")
    data, labels = _validate(content)
    names = list(DEAP_EEG_32) + [name for name, _, _ in DEAP_PERIPHERAL]
    types = ["eeg"] * 32 + [kind for _, kind, _ in DEAP_PERIPHERAL]
    units = ["uV"] * 32 + [unit for _, _, unit in DEAP_PERIPHERAL]
    split = int(BASELINE_S * SFREQ)
    subject = Path(source).stem
    return [
        Recording(
            data=np.asarray(trial[:, split:], dtype=np.float64), baseline=np.asarray(trial[:, :split], dtype=np.float64),
            ch_names=names, ch_types=types, units=units, sfreq=SFREQ, source=source, dataset="deap",
            subject=subject, trial=f"{index + 1:02d}",
            labels={name: float(value) for name, value in zip(LABEL_NAMES, labels[index])},
            meta={"format": "deap", "nan_samples": int(np.isnan(trial).sum())},
        )
        for index, trial in enumerate(data)
    ]


def _validate(content) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(content, dict) or not {"data", "labels"} <= {k for k in content if isinstance(k, str)}:
        # keys described within bounds: a nested key can print as gigabytes
        keys = f"keys {short(list(content)[:8], 200)}" if isinstance(content, dict) else type(content).__name__
        raise RecordingRejected(f"DEAP pickle must be a dict with 'data' and 'labels'; got {keys}", "dataset_layout")
    data, labels = content["data"], content["labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 3 or data.shape[1] != N_CHANNELS:
        shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise RecordingRejected(f"DEAP 'data' must be (trials, {N_CHANNELS}, samples); got {shape}", "dataset_layout")
    if data.shape[2] <= BASELINE_S * SFREQ:
        raise RecordingRejected(f"DEAP trials hold {data.shape[2]} samples, not more than the 3-s baseline", "dataset_layout")
    if not isinstance(labels, np.ndarray) or labels.shape != (data.shape[0], len(LABEL_NAMES)):
        raise RecordingRejected(f"DEAP 'labels' must be ({data.shape[0]}, 4); got {labels.shape if isinstance(labels, np.ndarray) else type(labels).__name__}", "dataset_layout")
    return data, labels
