"""SCMM networks: the 1-D CNN encoder over DE features, its projector, decoder and emotion classifier.

One sample is a (C, F) matrix: differential entropy of F = 5 bands for each of C EEG channels
(62 for SEED/SEED-IV, 32 when DEAP is involved). The convolutions run along the band axis with the
EEG channels as input maps. Channel alignment between corpora happens in the data layer; the
encoder only needs the channel count.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

_KERNEL, _PADDING = 8, 4


def _conv_stage(in_maps: int, out_maps: int) -> list[nn.Module]:
    return [
        nn.Conv1d(in_maps, out_maps, kernel_size=_KERNEL, padding=_PADDING, bias=False),
        nn.BatchNorm1d(out_maps),
        nn.ReLU(),
        nn.MaxPool1d(kernel_size=2, stride=2, padding=1),
    ]


def _stage_length(length: int) -> int:
    """Length after one conv (kernel 8, padding 4) and one max-pool (2, stride 2, padding 1)."""
    length = length + 2 * _PADDING - _KERNEL + 1
    return (length + 2 - 2) // 2 + 1


@dataclass
class SCMMEncoderConfig:
    n_channels: int = 62
    n_bands: int = 5
    width: int = 128  # output maps of the last stage; the stages have width/4, width/2, width

    @property
    def out_length(self) -> int:
        length = self.n_bands
        for _ in range(3):
            length = _stage_length(length)
        return length

    @property
    def feature_dim(self) -> int:
        """Size of the flattened encoder output h (384 for 5 bands and width 128)."""
        return self.width * self.out_length

    def build(self) -> "SCMMEncoder":
        return SCMMEncoder(self)


class SCMMEncoder(nn.Module):
    """(B, C, F) DE features -> (B, feature_dim) flattened feature maps h."""

    def __init__(self, config: SCMMEncoderConfig):
        super().__init__()
        for name in ("n_channels", "n_bands", "width"):
            if getattr(config, name) < 1:
                raise ValueError(f"SCMMEncoderConfig.{name} must be a positive integer, got {getattr(config, name)!r}")
        if config.width % 4:
            raise ValueError(f"SCMMEncoderConfig.width must be a multiple of 4, got {config.width!r}")
        self.config = config
        w = config.width
        self.layers = nn.Sequential(
            *_conv_stage(config.n_channels, w // 4), *_conv_stage(w // 4, w // 2), *_conv_stage(w // 2, w)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.config.n_channels, self.config.n_bands)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"SCMMEncoder expects (batch, {expected[0]}, {expected[1]}) DE features, got {tuple(x.shape)}")
        return self.layers(x).flatten(1)


@dataclass
class SCMMConfig:
    encoder: SCMMEncoderConfig = field(default_factory=SCMMEncoderConfig)
    projector_hidden: int = 256
    projector_dim: int = 128

    def build(self) -> "SCMM":
        return SCMM(self)


class SCMM(nn.Module):
    """Encoder, projector (for the contrastive loss) and linear decoder (for reconstruction)."""

    def __init__(self, config: SCMMConfig):
        super().__init__()
        self.config = config
        self.encoder = config.encoder.build()
        feature_dim = config.encoder.feature_dim
        self.projector = nn.Sequential(
            nn.Linear(feature_dim, config.projector_hidden),
            nn.BatchNorm1d(config.projector_hidden),
            nn.ReLU(),
            nn.Linear(config.projector_hidden, config.projector_dim),
        )
        self.decoder = nn.Linear(feature_dim, config.encoder.n_channels * config.encoder.n_bands)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (h, z): encoder features and their projections."""
        h = self.encoder(x)
        return h, self.projector(h)


@dataclass
class FeatureScalingConfig:
    """Per-feature min-max scaling of flattened (C·F) inputs to [0, 1], fitted on training data."""

    minimum: tuple[float, ...] = ()
    maximum: tuple[float, ...] = ()

    def build(self) -> "FeatureScaling":
        return FeatureScaling(self)


class FeatureScaling(nn.Module):
    """(B, C, F) -> (x - min) / (max - min) per flattened feature; constant features only shift.

    The fitted values live in the config (an export rebuilds from it), not in the state_dict.
    """

    def __init__(self, config: FeatureScalingConfig):
        super().__init__()
        minimum = torch.tensor(config.minimum, dtype=torch.float32)
        maximum = torch.tensor(config.maximum, dtype=torch.float32)
        if minimum.ndim != 1 or minimum.numel() == 0 or minimum.shape != maximum.shape:
            raise ValueError("FeatureScalingConfig needs minimum and maximum of one non-empty length, got "
                             f"{len(config.minimum)} and {len(config.maximum)} values")
        if not bool((maximum >= minimum).all()):
            raise ValueError(f"FeatureScalingConfig.maximum is below minimum at features "
                             f"{torch.nonzero(maximum < minimum).flatten().tolist()[:10]}")
        self.config = config
        span = maximum - minimum
        # scikit-learn's MinMaxScaler convention (upstream's): a constant feature keeps scale 1
        self.register_buffer("minimum", minimum, persistent=False)
        self.register_buffer("scale", 1.0 / torch.where(span > 0, span, torch.ones_like(span)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        if flat.shape[1] != self.minimum.numel():
            raise ValueError(f"FeatureScaling was fitted on {self.minimum.numel()} features per sample, "
                             f"got input of shape {tuple(x.shape)}")
        return ((flat - self.minimum) * self.scale).to(x.dtype).view_as(x)


@dataclass
class SCMMClassifierConfig:
    feature_dim: int = 384
    hidden: int = 128
    n_classes: int = 3

    def build(self) -> "SCMMClassifier":
        return SCMMClassifier(self)


class SCMMClassifier(nn.Module):
    """Emotion head on encoder features: Linear -> sigmoid -> Linear to class logits."""

    def __init__(self, config: SCMMClassifierConfig):
        super().__init__()
        if config.n_classes < 2:
            raise ValueError(f"SCMMClassifierConfig.n_classes must be at least 2, got {config.n_classes!r}")
        self.config = config
        self.hidden = nn.Linear(config.feature_dim, config.hidden)
        self.out = nn.Linear(config.hidden, config.n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(torch.sigmoid(self.hidden(h)))
