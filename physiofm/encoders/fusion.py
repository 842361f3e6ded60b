"""Classification heads over pretrained encoders: EEG ⊕ ECG fusion by concatenation, or one modality.

Each encoder gives a pooled embedding (`encoder.embed(x, pooling)`); the embeddings are
concatenated in a fixed modality order and an MLP head learns the cross-modal interactions.
With one encoder this is the single-modality head used for ablations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch
from torch import nn

Pooling = Literal["mean", "flatten"]


@dataclass
class FusionHeadConfig:
    """MLP head over concatenated embeddings."""

    num_classes: int = 2
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1
    pooling: Pooling = "mean"
    freeze_encoders: bool = True
    #: (channels, patches) per modality, needed only for pooling="flatten" to size the head
    flatten_shapes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"FusionHeadConfig.num_classes must be >= 2, got {self.num_classes}")
        if self.pooling not in ("mean", "flatten"):
            raise ValueError(f"FusionHeadConfig.pooling must be 'mean' or 'flatten', got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FusionHeadConfig.dropout must be in [0, 1), got {self.dropout}")
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)

    def build(self, encoders: Mapping[str, nn.Module]) -> "FusionClassifier":
        return FusionClassifier(encoders, self)


class FusionClassifier(nn.Module):
    """Pooled embeddings of each modality, concatenated, then an MLP to class logits."""

    def __init__(self, encoders: Mapping[str, nn.Module], config: FusionHeadConfig | None = None):
        super().__init__()
        if not encoders:
            raise ValueError("FusionClassifier needs at least one encoder (e.g. {'eeg': ..., 'ecg': ...})")
        self.config = config or FusionHeadConfig()
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        if self.config.freeze_encoders:
            self.encoders.requires_grad_(False)
        width = sum(self._embedding_width(name, enc) for name, enc in self.encoders.items())
        layers: list[nn.Module] = []
        for hidden in self.config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ELU(), nn.Dropout(self.config.dropout)]
            width = hidden
        layers.append(nn.Linear(width, self.config.num_classes))
        self.head = nn.Sequential(*layers)

    def _embedding_width(self, name: str, encoder: nn.Module) -> int:
        d_model = encoder.config.d_model
        if self.config.pooling == "mean":
            return d_model
        if name not in self.config.flatten_shapes:
            raise ValueError(f"pooling='flatten' needs flatten_shapes[{name!r}] = (channels, patches)")
        c, n = self.config.flatten_shapes[name]
        return c * n * d_model

    def train(self, mode: bool = True) -> "FusionClassifier":
        super().train(mode)
        if self.config.freeze_encoders:
            self.encoders.eval()  # frozen encoders keep dropout off
        return self

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"inputs lack modalities {missing}; this head fuses {list(self.modalities)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.freeze_encoders):
            parts = [self.encoders[m].embed(inputs[m], self.config.pooling) for m in self.modalities]
        return torch.cat(parts, dim=-1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(inputs))
