"""PhysioSync networks: multi-view transformer encoders, projectors and the gated fusion classifier.

One encoder per modality (EEG, peripheral) and per resolution (long 5 s, short 1 s windows).
A window (C, T) is flattened and embedded as several gated views of one linear embedding; a CLS
token joins them, pre-LN transformer blocks mix them (EEG blocks also attend to learnable prompt
tokens of their own), and the final tokens are flattened into the feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

RESOLUTION_SECONDS = {"long": 5, "short": 1}
RESOLUTION_DIM = {"long": 640, "short": 128}  # published token widths


@dataclass
class PhysioSyncEncoderConfig:
    n_channels: int = 32
    n_samples: int = 128
    dim: int = 128
    n_views: int = 3
    depth: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.2
    layer_scale: float = 0.1
    n_prompts: int = 0  # learnable prompt tokens per block: 2 for EEG encoders, 0 for peripheral ones

    @classmethod
    def for_window(cls, resolution: str, n_channels: int, eeg: bool, sample_rate: int = 128, **overrides):
        """Published sizes for a long (5 s) or short (1 s) window of `n_channels` at `sample_rate`."""
        if resolution not in RESOLUTION_SECONDS:
            raise ValueError(f"resolution must be one of {tuple(RESOLUTION_SECONDS)}, got {resolution!r}")
        sizes = {"n_channels": n_channels, "n_samples": RESOLUTION_SECONDS[resolution] * sample_rate,
                 "dim": RESOLUTION_DIM[resolution], "n_prompts": 2 if eeg else 0}
        return cls(**{**sizes, **overrides})

    @property
    def out_dim(self) -> int:
        """Flattened feature size: the CLS token plus one token per view."""
        return (1 + self.n_views) * self.dim

    def build(self) -> "PhysioSyncEncoder":
        return PhysioSyncEncoder(self)


class MultiViewEmbedding(nn.Module):
    """Linear(in -> D) gated by sigmoid(Linear(in -> V·D)) into V tokens, each view batch-normalised."""

    def __init__(self, in_dim: int, dim: int, n_views: int):
        super().__init__()
        self.n_views, self.dim = n_views, dim
        self.value = nn.Linear(in_dim, dim)
        self.gate = nn.Linear(in_dim, n_views * dim)
        self.norm = nn.BatchNorm1d(n_views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.gate(x)).view(-1, self.n_views, self.dim)
        return self.norm(self.value(x).unsqueeze(1) * gates)


class TransformerBlock(nn.Module):
    """Pre-LN block with layer scale; optional prompt tokens join the sequence for this block only."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, layer_scale: float, n_prompts: int):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.ReLU(), nn.Linear(mlp_ratio * dim, dim))
        self.scale_attn = nn.Parameter(torch.full((dim,), layer_scale))
        self.scale_mlp = nn.Parameter(torch.full((dim,), layer_scale))
        self.prompts = nn.Parameter(0.02 * torch.randn(1, n_prompts, dim)) if n_prompts else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n_tokens = tokens.shape[1]
        if self.prompts is not None:
            tokens = torch.cat([tokens, self.prompts.expand(tokens.shape[0], -1, -1)], dim=1)
        normed = self.norm_attn(tokens)
        tokens = tokens + self.scale_attn * self.attn(normed, normed, normed, need_weights=False)[0]
        tokens = tokens + self.scale_mlp * self.mlp(self.norm_mlp(tokens))
        return tokens[:, :n_tokens]


class PhysioSyncEncoder(nn.Module):
    """(B, C, T) window -> (B, out_dim) feature."""

    def __init__(self, config: PhysioSyncEncoderConfig):
        super().__init__()
        for name in ("n_channels", "n_samples", "dim", "n_views", "depth", "heads", "mlp_ratio"):
            if getattr(config, name) < 1:
                raise ValueError(f"PhysioSyncEncoderConfig.{name} must be a positive integer, got {getattr(config, name)!r}")
        if config.dim % config.heads:
            raise ValueError(f"PhysioSyncEncoderConfig.dim ({config.dim}) must be divisible by heads ({config.heads})")
        self.config = config
        d, n_tokens = config.dim, 1 + config.n_views
        self.embed = MultiViewEmbedding(config.n_channels * config.n_samples, d, config.n_views)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d))
        self.type_embedding = nn.Parameter(torch.zeros(1, 1, d))  # marks the modality of every token
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, n_tokens, d))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(d, config.heads, config.mlp_ratio, config.layer_scale, config.n_prompts)
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.config.n_channels, self.config.n_samples)
        if x.ndim != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"PhysioSyncEncoder expects (batch, {expected[0]}, {expected[1]}) windows, got {tuple(x.shape)}")
        views = self.embed(x.flatten(1))
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), views], dim=1)
        tokens = self.dropout(tokens + self.type_embedding + self.position_embedding)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).flatten(1)


@dataclass
class ProjectorConfig:
    hidden: tuple[int, ...] = (1024, 2048)
    out_dim: int = 4096
    dropout: float = 0.2

    def build(self, in_dim: int) -> nn.Sequential:
        """Linear -> BN -> ReLU -> Dropout for each hidden width, then Linear to out_dim."""
        layers: list[nn.Module] = []
        for width in self.hidden:
            layers += [nn.Linear(in_dim, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(self.dropout)]
            in_dim = width
        return nn.Sequential(*layers, nn.Linear(in_dim, self.out_dim))


@dataclass
class GatedFusionConfig:
    long_dim: int = 4 * RESOLUTION_DIM["long"]
    short_dim: int = 4 * RESOLUTION_DIM["short"]
    n_slices: int = 5  # short windows per long window
    n_classes: int = 2
    hidden: tuple[int, int] = (256, 128)
    dropout: float = 0.2

    def build(self) -> "GatedFusionClassifier":
        return GatedFusionClassifier(self)


class GatedFusionClassifier(nn.Module):
    """Fine-tuning head over long and short features of EEG and the peripheral signal.

    Each feature is scaled by its gate's confidence, max softmax(Linear(f)) (one gate for long
    features, one for short), then [e_long, e_short_1..n, g_long, g_short_1..n] goes through an MLP.
    """

    def __init__(self, config: GatedFusionConfig):
        super().__init__()
        if config.n_classes < 2:
            raise ValueError(f"GatedFusionConfig.n_classes must be at least 2, got {config.n_classes!r}")
        self.config = config
        self.gate_long = nn.Linear(config.long_dim, config.n_classes)
        self.gate_short = nn.Linear(config.short_dim, config.n_classes)
        fused = 2 * (config.long_dim + config.n_slices * config.short_dim)
        first, second = config.hidden
        self.mlp = nn.Sequential(
            nn.Linear(fused, first), nn.BatchNorm1d(first), nn.ReLU(),
            nn.Linear(first, second), nn.BatchNorm1d(second), nn.ReLU(),
            nn.Dropout(config.dropout), nn.Linear(second, config.n_classes),
        )

    @staticmethod
    def _gated(feature: torch.Tensor, gate: nn.Linear) -> torch.Tensor:
        return feature * torch.softmax(gate(feature), dim=-1).amax(dim=-1, keepdim=True)

    def forward(self, eeg_long: torch.Tensor, eeg_short: torch.Tensor,
                peripheral_long: torch.Tensor, peripheral_short: torch.Tensor) -> torch.Tensor:
        """Long features (B, long_dim), short ones (B, n_slices, short_dim) -> class logits."""
        expected = (self.config.n_slices, self.config.short_dim)
        for name, short in (("eeg_short", eeg_short), ("peripheral_short", peripheral_short)):
            if short.ndim != 3 or tuple(short.shape[1:]) != expected:
                raise ValueError(f"{name} must have shape (batch, {expected[0]}, {expected[1]}), got {tuple(short.shape)}")
        parts = []
        for long, short in ((eeg_long, eeg_short), (peripheral_long, peripheral_short)):
            parts += [self._gated(long, self.gate_long), self._gated(short, self.gate_short).flatten(1)]
        return self.mlp(torch.cat(parts, dim=1))
