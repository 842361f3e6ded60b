"""The SCMM and PhysioSync encoders seen through the heads' one interface (pure torch):
`embed(x, pooling)` gives one embedding per window, `embedding_width()` says how wide it is."""
from __future__ import annotations

import torch
from torch import nn

from physiofm.encoders.physiosync import PhysioSyncEncoder
from physiofm.encoders.scmm import FeatureScaling, SCMMEncoder


class SCMMEmbedder(nn.Module):
    """DE features (B, C, 5) -> min-max scaling (fitted on the training side) -> SCMM's CNN -> (B, 384)."""

    def __init__(self, encoder: SCMMEncoder, scaling: FeatureScaling | None = None):
        super().__init__()
        self.encoder, self.scaling = encoder, scaling

    def embed(self, x: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
        return self.encoder(self.scaling(x) if self.scaling is not None else x)

    def embedding_width(self, pooling: str = "mean", shape=None) -> int:
        return self.encoder.config.feature_dim


class PhysioSyncEmbedder(nn.Module):
    """A 5-s window (B, C, T) -> [long encoder's feature, short encoder's feature of each of its
    `n_slices` 1-s slices]: (B, long_dim + n_slices x short_dim), what the gated head splits."""

    def __init__(self, long: PhysioSyncEncoder, short: PhysioSyncEncoder | None = None, n_slices: int = 5):
        super().__init__()
        self.long, self.short, self.n_slices = long, short, n_slices
        if short is not None and short.config.n_samples * n_slices != long.config.n_samples:
            raise ValueError(f"short encoder windows ({short.config.n_samples} samples) x {n_slices} slices must "
                             f"make the long window ({long.config.n_samples})")

    def embed(self, x: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
        parts = [self.long(x)]
        if self.short is not None:
            b, c, t = x.shape
            slices = x.reshape(b, c, self.n_slices, t // self.n_slices).transpose(1, 2)
            short = self.short(slices.reshape(b * self.n_slices, c, t // self.n_slices))
            parts.append(short.reshape(b, -1))
        return torch.cat(parts, dim=1)

    def embedding_width(self, pooling: str = "mean", shape=None) -> int:
        short = self.n_slices * self.short.config.out_dim if self.short is not None else 0
        return self.long.config.out_dim + short
