"""Data layer: read every corpus format from local or S3 storage, preprocess, and shard windows
into Parquet with Ray Data; stream them back into training.

    read_recording(uri) / read_trials(uri)       one file → Recording(s) in physical units
    prepare_corpus(inputs, output, preset=...)    Ray Data → OUTPUT/{windows/*.parquet, manifest.parquet, corpus.json}
    corpus_info(uri), training_dataset(uri), read_windows(uri), read_manifest(uri)

The names below load on first use: a process that needs one submodule (a training worker reading
`physiofm.data.storage`, a progress actor) does not import every reader (MNE, wfdb, SciPy).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_manifest": "physiofm.data.corpus",
    "corpus_info": "physiofm.data.loader",
    "read_windows": "physiofm.data.loader",
    "training_dataset": "physiofm.data.loader",
    "prepare_corpus": "physiofm.data.pipeline",
    "PRESETS": "physiofm.data.presets",
    "Preset": "physiofm.data.presets",
    "get_preset": "physiofm.data.presets",
    "FORMATS": "physiofm.data.readers",
    "read_recording": "physiofm.data.readers",
    "read_trials": "physiofm.data.readers",
    "Recording": "physiofm.data.recording",
    "RecordingRejected": "physiofm.data.recording",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'physiofm.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
