"""Pretraining methods: an encoder + an objective + a config, all trained by the one loop.

    masked_reconstruction   CBraMod EEG / ECG dual masking on patch windows (C, N, P)
    scmm                    soft contrastive masked modeling on DE features (C, 5)
    physiosync              LS-TCL + CM-CA on stimulus segments of EEG and a peripheral signal
    supervised              fine-tuning: pretrained encoders (frozen or not) + a head, on labelled windows

Each method config says how to build its objective (`build`), which corpus columns it streams
(`columns`), which preprocessing preset prepares a raw corpus for it (`default_preset`), and what a
corpus must look like for it (`check_corpus`, run on the driver before any worker starts).
"""
from __future__ import annotations

import io

from physiofm.platform.config import ConfigError, MethodConfig
from physiofm.platform.methods.masked import MaskedReconstructionConfig
from physiofm.platform.methods.physiosync import PHYSIOSYNC_LAYOUTS, RESOLUTIONS, PhysioSyncMethodConfig
from physiofm.platform.methods.scmm import SCMM_CORPORA, SCMMMethodConfig
from physiofm.platform.methods.supervised import SupervisedMethodConfig

__all__ = ["METHODS", "MaskedReconstructionConfig", "PHYSIOSYNC_LAYOUTS", "PhysioSyncMethodConfig", "RESOLUTIONS",
           "SCMMMethodConfig", "SCMM_CORPORA", "SupervisedMethodConfig", "read_initial_weights"]

METHODS: dict[str, type[MethodConfig]] = {
    MaskedReconstructionConfig.name: MaskedReconstructionConfig,
    SCMMMethodConfig.name: SCMMMethodConfig,
    PhysioSyncMethodConfig.name: PhysioSyncMethodConfig,
    SupervisedMethodConfig.name: SupervisedMethodConfig,
}


def read_initial_weights(uri: str) -> io.BytesIO:
    """Open an `init_from` file (local path or s3://) as an in-memory buffer for `torch.load`."""
    from physiofm.data.storage import fsspec_filesystem

    fs, path = fsspec_filesystem(uri)
    if not fs.exists(path):
        raise ConfigError(f"method.init_from: no such file {uri!r}")
    with fs.open(path, "rb") as f:
        return io.BytesIO(f.read())
