"""Data layer: read every corpus format from local or S3 storage, preprocess, and shard windows
into Parquet with Ray Data; stream them back into training.

    read_recording(uri) / read_trials(uri)       one file → Recording(s) in physical units
    prepare_corpus(inputs, output, preset=...)    Ray Data → OUTPUT/{windows/*.parquet, manifest.parquet, corpus.json}
    corpus_info(uri), training_dataset(uri), read_windows(uri), read_manifest(uri)
"""
from physiofm.data.corpus import read_manifest
from physiofm.data.loader import corpus_info, read_windows, training_dataset
from physiofm.data.pipeline import prepare_corpus
from physiofm.data.presets import PRESETS, Preset, get_preset
from physiofm.data.readers import FORMATS, read_recording, read_trials
from physiofm.data.recording import Recording, RecordingRejected

__all__ = ["FORMATS", "PRESETS", "Preset", "Recording", "RecordingRejected", "corpus_info", "get_preset",
           "prepare_corpus", "read_manifest", "read_recording", "read_trials", "read_windows", "training_dataset"]
