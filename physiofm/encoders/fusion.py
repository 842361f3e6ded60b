"""Classification heads over pretrained encoders (pure torch).

Every encoder a head uses gives one embedding per window, `encoder.embed(x, pooling)`, of
`embedding_width(encoder, name, pooling, shapes)` values. The heads:

    FusionClassifier        concatenation of the modalities' embeddings -> MLP (the EEG ⊕ ECG
                            method; with one encoder, the single-modality head of an ablation)
    LateFusionClassifier    one MLP per modality, trained each on its own loss; the prediction is
                            the mean of the modalities' class probabilities
    GatedFusionHead         PhysioSync's confidence-gated hierarchical fusion of long / short and
                            EEG / peripheral features (`GatedFusionClassifier`)
    SCMMFineTuning          SCMM's target-domain classifier (Linear -> sigmoid -> Linear) on its CNN

Frozen encoders get no gradient and stay in eval mode (no dropout, no batch-norm updates), so
their weights and buffers come out of training bit-unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

Pooling = Literal["mean", "flatten"]


@dataclass
class FusionHeadConfig:
    """MLP head over the encoders' embeddings."""

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


def embedding_width(encoder: nn.Module, name: str, pooling: str, shapes: Mapping[str, tuple[int, int]]) -> int:
    """Width of `encoder.embed(x, pooling)`: encoders that know it say so (`embedding_width`);
    CBraMod gives d_model (mean) or channels x patches x d_model (flatten)."""
    if hasattr(encoder, "embedding_width"):
        return int(encoder.embedding_width(pooling, shapes.get(name)))
    d_model = encoder.config.d_model
    if pooling == "mean":
        return d_model
    if name not in shapes:
        raise ValueError(f"pooling='flatten' needs flatten_shapes[{name!r}] = (channels, patches)")
    c, n = shapes[name]
    return c * n * d_model


def mlp(width: int, hidden_dims: tuple[int, ...], dropout: float, num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ELU(), nn.Dropout(dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class EncoderHead(nn.Module):
    """Encoders by modality (frozen or trained) and the embeddings they give a head."""

    def __init__(self, encoders: Mapping[str, nn.Module], freeze: bool, pooling: str = "mean"):
        super().__init__()
        if not encoders:
            raise ValueError(f"{type(self).__name__} needs at least one encoder (e.g. {{'eeg': ..., 'ecg': ...}})")
        self.modalities = tuple(encoders)
        self.encoders = nn.ModuleDict(encoders)
        self.freeze, self.pooling = freeze, pooling
        if freeze:
            self.encoders.requires_grad_(False)

    def train(self, mode: bool = True) -> "EncoderHead":
        super().train(mode)
        if self.freeze:
            self.encoders.eval()  # frozen encoders keep dropout off and batch-norm statistics fixed
        return self

    def embeddings(self, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"inputs lack modalities {missing}; this head fuses {list(self.modalities)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            return [self.encoders[m].embed(inputs[m], self.pooling) for m in self.modalities]

    def embed(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(self.embeddings(inputs), dim=-1)

    def head_parameters(self) -> list[nn.Parameter]:
        encoder_ids = {id(p) for p in self.encoders.parameters()}
        return [p for p in self.parameters() if id(p) not in encoder_ids and p.requires_grad]


class FusionClassifier(EncoderHead):
    """Pooled embeddings of each modality, concatenated, then an MLP to class logits."""

    def __init__(self, encoders: Mapping[str, nn.Module], config: FusionHeadConfig | None = None):
        config = config or FusionHeadConfig()
        super().__init__(encoders, config.freeze_encoders, config.pooling)
        self.config = config
        width = sum(embedding_width(enc, name, config.pooling, config.flatten_shapes)
                    for name, enc in self.encoders.items())
        self.head = mlp(width, config.hidden_dims, config.dropout, config.num_classes)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.embed(inputs))


class LateFusionClassifier(EncoderHead):
    """One MLP per modality; logits = log of the mean of the modalities' class probabilities.

    Training sums each modality's own cross-entropy (`training_loss`), so a modality's head learns
    from its own evidence rather than from the mixture's."""

    def __init__(self, encoders: Mapping[str, nn.Module], config: FusionHeadConfig | None = None):
        config = config or FusionHeadConfig()
        super().__init__(encoders, config.freeze_encoders, config.pooling)
        self.config = config
        self.heads = nn.ModuleDict({
            name: mlp(embedding_width(enc, name, config.pooling, config.flatten_shapes), config.hidden_dims,
                      config.dropout, config.num_classes) for name, enc in self.encoders.items()})

    def member_logits(self, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        return [self.heads[m](e) for m, e in zip(self.modalities, self.embeddings(inputs))]

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        members = torch.stack([F.log_softmax(logits, dim=-1) for logits in self.member_logits(inputs)])
        return torch.logsumexp(members, dim=0) - torch.log(torch.tensor(float(len(self.modalities))))

    def training_loss(self, inputs, labels: torch.Tensor, label_smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        members = self.member_logits(inputs)
        loss = torch.stack([F.cross_entropy(m, labels, label_smoothing=label_smoothing) for m in members]).mean()
        probabilities = torch.stack([m.softmax(-1) for m in members]).mean(0)
        return loss, torch.log(probabilities + 1e-12)


class GatedFusionHead(EncoderHead):
    """PhysioSync's fusion: each modality's embedding is [long feature, short features of its
    `n_slices` 1-s slices]; the confidence-gated classifier fuses EEG and peripheral ones."""

    def __init__(self, encoders: Mapping[str, nn.Module], classifier: nn.Module, freeze: bool):
        super().__init__(encoders, freeze)
        if len(self.modalities) != 2:
            raise ValueError(f"the gated head fuses two modalities (EEG, peripheral), got {list(self.modalities)}")
        self.classifier = classifier
        cfg = classifier.config
        self.split_sizes = (cfg.long_dim, cfg.n_slices * cfg.short_dim)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.classifier.config
        parts = []
        for embedding in self.embeddings(inputs):
            if embedding.shape[1] != sum(self.split_sizes):
                raise ValueError(f"gated head expects embeddings of {sum(self.split_sizes)} values "
                                 f"(long {cfg.long_dim} + {cfg.n_slices} x short {cfg.short_dim}), got {embedding.shape[1]}")
            long, short = embedding.split(self.split_sizes, dim=1)
            parts += [long, short.reshape(len(short), cfg.n_slices, cfg.short_dim)]
        return self.classifier(*parts)


class SCMMFineTuning(EncoderHead):
    """SCMM on the target corpus: its CNN (trained too, unless frozen) and its classifier."""

    def __init__(self, encoders: Mapping[str, nn.Module], classifier: nn.Module, freeze: bool):
        super().__init__(encoders, freeze)
        if len(self.modalities) != 1:
            raise ValueError(f"the SCMM head takes one EEG encoder, got {list(self.modalities)}")
        self.classifier = classifier

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.embed(inputs))


class PrecomputedEmbedding(nn.Module):
    """Stands in for a frozen encoder whose embeddings were computed once: returns its input."""

    def __init__(self, width: int):
        super().__init__()
        self.width = int(width)

    def embed(self, x: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
        return x

    def embedding_width(self, pooling: str = "mean", shape=None) -> int:
        return self.width
