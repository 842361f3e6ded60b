"""CBraMod masked patch reconstruction, and the ECG dual-masking method."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from physiofm.encoders.cbramod import CBraMod, CBraModConfig
from physiofm.objectives.base import PretrainingObjective
from physiofm.objectives.masking import MaskedReconstruction
from physiofm.platform.config import ConfigError, MethodConfig


@dataclass
class MaskedReconstructionConfig(MethodConfig):
    """CBraMod masked patch reconstruction; with `inter_ratio > 0`, the ECG dual-masking method."""

    name: ClassVar[str] = "masked_reconstruction"
    resume_may_change: ClassVar[tuple[str, ...]] = ("intra_ratio", "inter_ratio", "init_from")
    modality: Literal["eeg", "ecg"] = "eeg"
    encoder: CBraModConfig = field(default_factory=CBraModConfig)
    intra_ratio: float = 0.5
    inter_ratio: float = 0.0
    init_from: str = ""  # official CBraMod weights or a physiofm export (local path or s3://)

    def validate(self) -> None:
        for key in ("intra_ratio", "inter_ratio"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1) (a masking probability), got {value!r}")
        if self.modality not in ("eeg", "ecg"):
            raise ConfigError(f"method.modality must be one of ['eeg', 'ecg'], got {self.modality!r}")

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return MaskedReconstruction.input_columns, MaskedReconstruction.optional_columns

    @property
    def default_preset(self) -> str:
        return "cbramod-eeg" if self.modality == "eeg" else "ecg"

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get("x")
        if shape is None or len(shape) != 3:
            raise ConfigError(f"method {self.name} needs a corpus column 'x' of windows shaped "
                              f"(channels, patches, samples); the corpus has {dict(shapes)}")
        if shape[-1] != self.encoder.patch_size:
            raise ConfigError(f"corpus windows have {shape[-1]} samples per patch but "
                              f"method.encoder.patch_size is {self.encoder.patch_size}")

    def build(self, seed: int = 0, initial_weights: Any = None) -> PretrainingObjective:
        """`initial_weights`: an opened `init_from` file (bytes buffer) or None to start from scratch."""
        if initial_weights is not None:
            encoder = CBraMod.from_pretrained(initial_weights)
            if encoder.config.patch_size != self.encoder.patch_size:
                raise ConfigError(f"method.init_from has patch size {encoder.config.patch_size}, "
                                  f"method.encoder.patch_size is {self.encoder.patch_size}")
        else:
            encoder = CBraMod(self.encoder)
        return MaskedReconstruction(encoder, self.intra_ratio, self.inter_ratio, seed=seed)
