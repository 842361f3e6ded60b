"""CBraMod: the criss-cross transformer EEG encoder (Wang et al., ICLR 2025), written for physiofm.

`CBraMod()` with no arguments is the official configuration; its parameter names equal the official
state_dict's (211 tensors), so the authors' `pretrained_weights.pth` loads with `strict=True`.
The same class, configured for ECG leads, is the "symmetric" ECG encoder: spatial attention then
runs across leads instead of electrodes.

Input `x`: (B, C, N, P) = batch, channels, patches, samples per patch; C and N are free at run time.
Masking replaces masked patches of the raw signal by the fixed zero `mask_encoding` before the
embedding (no learned mask token), as the official model does.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import torch
import torch.nn.functional as F
from torch import nn

from physiofm.encoders.state import standalone_state_dict

#: marks the files written by `CBraMod.save_pretrained` (the official file is a bare state_dict)
EXPORT_FORMAT = "physiofm.cbramod.v1"


@dataclass
class CBraModConfig:
    """Architecture of a CBraMod encoder; the defaults are the official model."""

    patch_size: int = 200  # samples per patch (1 s at 200 Hz)
    d_model: int = 200
    n_layer: int = 12
    nhead: int = 8  # split evenly: nhead/2 spatial heads on d_model/2 features, nhead/2 temporal
    dim_feedforward: int = 800
    dropout: float = 0.1
    out_dim: int = 200  # reconstruction head output (= patch_size to reconstruct raw patches)
    conv_channels: int = 25  # time-domain conv stack width
    acpe_kernel: tuple[int, int] = (19, 7)  # (channels, patches) extent of the positional conv

    def __post_init__(self) -> None:
        self.acpe_kernel = tuple(self.acpe_kernel)
        for name in ("patch_size", "d_model", "n_layer", "nhead", "dim_feedforward", "out_dim",
                     "conv_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CBraModConfig.{name} must be a positive integer, got {value!r}")
        if self.nhead % 2 or self.d_model % 2 or (self.d_model // 2) % (self.nhead // 2):
            raise ValueError(
                f"CBraModConfig: d_model={self.d_model} and nhead={self.nhead} must split into two "
                f"halves (spatial, temporal), each half's width divisible by its nhead/2 heads")
        if self.conv_channels % 5:
            raise ValueError(f"CBraModConfig.conv_channels must be a multiple of 5 (GroupNorm(5, ·)), "
                             f"got {self.conv_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CBraModConfig.dropout must be in [0, 1), got {self.dropout}")
        if any(k < 1 or k % 2 == 0 for k in self.acpe_kernel):
            raise ValueError(f"CBraModConfig.acpe_kernel must be two odd positive sizes, got {self.acpe_kernel}")

    @property
    def conv_out_width(self) -> int:
        """Time steps left by the stride-25 first convolution (8 for a 200-sample patch)."""
        return (self.patch_size + 2 * 24 - 49) // 25 + 1

    def build(self) -> "CBraMod":
        return CBraMod(self)


class PatchEmbedding(nn.Module):
    """Time-domain conv stack + FFT-magnitude projection + asymmetric conditional positional encoding."""

    def __init__(self, cfg: CBraModConfig):
        super().__init__()
        c, d = cfg.conv_channels, cfg.d_model
        self.patch_size = cfg.patch_size
        self.mask_encoding = nn.Parameter(torch.zeros(cfg.patch_size), requires_grad=False)
        # Defined in the official order, so state_dict keys come out in the same order.
        kc, kn = cfg.acpe_kernel
        self.positional_encoding = nn.Sequential(
            nn.Conv2d(d, d, kernel_size=(kc, kn), stride=(1, 1), padding=(kc // 2, kn // 2), groups=d)
        )
        self.proj_in = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=(1, 49), stride=(1, 25), padding=(0, 24)),
            nn.GroupNorm(5, c),
            nn.GELU(),
            nn.Conv2d(c, c, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)),
            nn.GroupNorm(5, c),
            nn.GELU(),
            nn.Conv2d(c, c, kernel_size=(1, 3), stride=(1, 1), padding=(0, 1)),
            nn.GroupNorm(5, c),
            nn.GELU(),
        )
        time_features = c * cfg.conv_out_width
        # The official sizes give exactly d_model time features; other patch sizes need a projection.
        self.time_proj = nn.Identity() if time_features == d else nn.Linear(time_features, d)
        self.spectral_proj = nn.Sequential(nn.Linear(cfg.patch_size // 2 + 1, d), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, c, n, p = x.shape
        if p != self.patch_size:
            raise ValueError(f"CBraMod expects patches of {self.patch_size} samples, got input of shape "
                             f"{tuple(x.shape)} (B, C, N, P)")
        if mask is not None:
            if mask.shape != (b, c, n):
                raise ValueError(f"mask must have shape (B, C, N) = {(b, c, n)}, got {tuple(mask.shape)}")
            x = torch.where(mask.bool().unsqueeze(-1), self.mask_encoding.to(x.dtype), x)
        time = self.proj_in(x.reshape(b, 1, c * n, p))  # (B, conv_channels, C*N, W)
        time = self.time_proj(time.permute(0, 2, 1, 3).reshape(b, c, n, -1))  # channel-major flatten
        spectrum = torch.fft.rfft(x, dim=-1, norm="forward").abs()
        emb = time + self.spectral_proj(spectrum)
        return emb + self.positional_encoding(emb.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class CrissCrossLayer(nn.Module):
    """Pre-LN layer: half the features attend across channels, half across patches, then an FFN."""

    def __init__(self, cfg: CBraModConfig):
        super().__init__()
        half, heads = cfg.d_model // 2, cfg.nhead // 2
        self.self_attn_s = nn.MultiheadAttention(half, heads, dropout=cfg.dropout, batch_first=True)
        self.self_attn_t = nn.MultiheadAttention(half, heads, dropout=cfg.dropout, batch_first=True)
        self.linear1 = nn.Linear(cfg.d_model, cfg.dim_feedforward)
        self.dropout = nn.Dropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, cfg.d_model)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout1(self._criss_cross_attention(self.norm1(x)))
        return x + self.dropout2(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))

    def _criss_cross_attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, n, d = x.shape
        half = d // 2
        spatial = x[..., :half].transpose(1, 2).reshape(b * n, c, half)  # one sequence per patch
        temporal = x[..., half:].reshape(b * c, n, half)  # one sequence per channel
        spatial = self.self_attn_s(spatial, spatial, spatial, need_weights=False)[0]
        temporal = self.self_attn_t(temporal, temporal, temporal, need_weights=False)[0]
        spatial = spatial.reshape(b, n, c, half).transpose(1, 2)
        return torch.cat((spatial, temporal.reshape(b, c, n, half)), dim=-1)


class CrissCrossEncoder(nn.Module):
    def __init__(self, cfg: CBraModConfig):
        super().__init__()
        self.layers = nn.ModuleList(CrissCrossLayer(cfg) for _ in range(cfg.n_layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CBraMod(nn.Module):
    """Criss-cross transformer encoder with its masked-reconstruction head `proj_out`."""

    def __init__(self, config: CBraModConfig | None = None, **overrides: Any):
        super().__init__()
        if config is None:
            config = CBraModConfig(**overrides)
        elif overrides:
            config = dataclasses.replace(config, **overrides)
        self.config = config
        self.patch_embedding = PatchEmbedding(config)
        self.encoder = CrissCrossEncoder(config)
        self.proj_out = nn.Sequential(nn.Linear(config.d_model, config.out_dim))
        self.apply(_init_linear)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction of every patch, (B, C, N, out_dim): what the official forward returns."""
        return self.proj_out(self.encode(x, mask))

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone features before the head, (B, C, N, d_model)."""
        return self.encoder(self.patch_embedding(x, mask))

    def embed(self, x: torch.Tensor, pooling: Literal["mean", "flatten"] = "mean") -> torch.Tensor:
        """Embedding for downstream heads: mean over channels and patches (B, d_model), or every
        patch representation flattened (B, C*N*d_model) as the official fine-tuning does."""
        features = self.encode(x)
        if pooling == "mean":
            return features.mean(dim=(1, 2))
        if pooling == "flatten":
            return features.flatten(1)
        raise ValueError(f"pooling must be 'mean' or 'flatten', got {pooling!r}")

    # ---------------------------------------------------------------- weights in and out
    def save_pretrained(self, path: str | Path) -> Path:
        """Write config + state_dict, loadable with `torch.load(weights_only=True)`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": EXPORT_FORMAT, "config": dataclasses.asdict(self.config),
                   "state_dict": standalone_state_dict(self)}
        torch.save(payload, path)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path | BinaryIO, map_location: str | torch.device = "cpu",
                        strict: bool = True) -> "CBraMod":
        """Load the official `pretrained_weights.pth` (a bare state_dict) or a physiofm export.

        `path` may also be an open binary file (e.g. read from object storage)."""
        source = path if hasattr(path, "read") else str(path)
        payload = torch.load(source, map_location=map_location, weights_only=True)
        if isinstance(payload, dict) and payload.get("format") == EXPORT_FORMAT:
            config = CBraModConfig(**payload["config"])
            state = payload["state_dict"]
        elif isinstance(payload, dict) and "patch_embedding.mask_encoding" in payload:
            state = payload
            config = config_from_state_dict(state)
        else:
            raise ValueError(f"{path}: neither an official CBraMod state_dict nor a physiofm export "
                             f"(format {EXPORT_FORMAT!r})")
        model = cls(config)
        model.load_state_dict(state, strict=strict)
        return model


def config_from_state_dict(state: dict[str, torch.Tensor], nhead: int = 8) -> CBraModConfig:
    """Infer the architecture from a bare state_dict (head count is not stored: official 8)."""
    spectral = state["patch_embedding.spectral_proj.0.weight"]
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")}
    conv = state["patch_embedding.proj_in.0.weight"]
    acpe = state["patch_embedding.positional_encoding.0.weight"]
    return CBraModConfig(
        patch_size=int(state["patch_embedding.mask_encoding"].shape[0]),
        d_model=int(spectral.shape[0]),
        n_layer=len(layers),
        nhead=nhead,
        dim_feedforward=int(state["encoder.layers.0.linear1.weight"].shape[0]),
        out_dim=int(state["proj_out.0.weight"].shape[0]),
        conv_channels=int(conv.shape[0]),
        acpe_kernel=(int(acpe.shape[2]), int(acpe.shape[3])),
    )


def _init_linear(module: nn.Module) -> None:
    # Kaiming-normal (fan_out) on Linear weights, as the official initialisation.
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
