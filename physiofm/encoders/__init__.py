"""Encoders: CBraMod criss-cross transformer (EEG, and the symmetric ECG encoder), fusion heads (pure torch)."""
from physiofm.encoders.cbramod import CBraMod, CBraModConfig
from physiofm.encoders.fusion import FusionClassifier, FusionHeadConfig

__all__ = ["CBraMod", "CBraModConfig", "FusionClassifier", "FusionHeadConfig", "ecg_encoder_config"]


def ecg_encoder_config(**overrides) -> CBraModConfig:
    """The symmetric ECG encoder: the CBraMod architecture, spatial attention across leads.

    Same class and sizes as the EEG encoder (patch 200 samples = 1 s at 200 Hz); the lead count is
    free at run time (12 for standard ECG windows of shape (12, 10, 200)).
    """
    return CBraModConfig(**overrides)
