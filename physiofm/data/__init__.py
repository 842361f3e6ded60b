"""Data layer: read every corpus format from local or S3 storage, preprocess, and shard windows
into Parquet with Ray Data; stream them back into training."""
from physiofm.data.readers import FORMATS, read_recording, read_trials
from physiofm.data.recording import Recording, RecordingRejected

__all__ = ["FORMATS", "Recording", "RecordingRejected", "read_recording", "read_trials"]
