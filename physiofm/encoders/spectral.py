"""The spectral baseline encoder: log band power of every channel, batch-normalised (pure torch).

The classic feature of EEG emotion recognition (band power / differential entropy, which for a
band-limited Gaussian is ½·log power + const), computed over the whole window so that slow
rhythms resolve: the fine bins below 4 Hz see a heart rate (ECG, plethysmograph) and a
skin-conductance level (the 0-0.5 Hz bin); the EEG bands above see alpha asymmetry and beta
power. It needs no pretraining, so it is the default encoder of a fine-tuning run: a baseline
any pretrained encoder should beat. The only learned part is the batch normalisation.

Input: patch windows (B, C, N, P) at `sample_rate` (P = 200 at 200 Hz), as every patch encoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: band edges in Hz: 0.25 Hz apart up to 2 Hz (a heart rate's fundamental, a skin-conductance
#: level in the first), then its harmonics, then the EEG bands
BAND_EDGES = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0, 8.0, 13.0, 20.0, 30.0, 45.0, 70.0)


@dataclass
class SpectralEncoderConfig:
    n_channels: int = 32
    sample_rate: float = 200.0
    band_edges: tuple[float, ...] = BAND_EDGES

    def __post_init__(self) -> None:
        self.band_edges = tuple(float(e) for e in self.band_edges)
        if self.n_channels < 1:
            raise ValueError(f"SpectralEncoderConfig.n_channels must be >= 1, got {self.n_channels}")
        if len(self.band_edges) < 2 or any(b <= a for a, b in zip(self.band_edges, self.band_edges[1:])):
            raise ValueError(f"SpectralEncoderConfig.band_edges must rise, got {self.band_edges}")
        if self.band_edges[-1] > self.sample_rate / 2:
            raise ValueError(f"SpectralEncoderConfig.band_edges reach {self.band_edges[-1]} Hz, above the Nyquist "
                             f"frequency of {self.sample_rate} Hz")

    @property
    def n_bands(self) -> int:
        return len(self.band_edges) - 1

    @property
    def d_model(self) -> int:
        return self.n_channels * self.n_bands

    def build(self) -> "SpectralEncoder":
        return SpectralEncoder(self)


class SpectralEncoder(nn.Module):
    """(B, C, N, P) patch windows -> (B, C * bands) normalised log band powers."""

    def __init__(self, config: SpectralEncoderConfig | None = None):
        super().__init__()
        self.config = config or SpectralEncoderConfig()
        self.norm = nn.BatchNorm1d(self.config.d_model)
        self._designs: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def band_power(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, bands) log mean power per band over the window (Hann-tapered periodogram)."""
        if x.ndim != 4 or x.shape[1] != self.config.n_channels:
            raise ValueError(f"SpectralEncoder expects (batch, {self.config.n_channels} channels, patches, samples), "
                             f"got {tuple(x.shape)}")
        signal = x.flatten(2).float()
        taper, averaging = self._design(signal.shape[-1], signal.device)
        spectrum = torch.fft.rfft(signal * taper, dim=-1)
        power = (spectrum.real.square() + spectrum.imag.square()) / signal.shape[-1]
        return torch.log(power @ averaging + 1e-10)

    def _design(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Hann taper (n,) and the (frequencies, bands) matrix averaging each band's bins, per length."""
        key = (n, str(device))
        if key not in self._designs:
            freqs = torch.fft.rfftfreq(n, 1.0 / self.config.sample_rate)
            edges = self.config.band_edges
            averaging = torch.zeros(len(freqs), len(edges) - 1)
            for band, (low, high) in enumerate(zip(edges, edges[1:])):
                inside = (freqs >= low) & (freqs < high)
                if not bool(inside.any()):  # a band narrower than the window's resolution: nearest bin
                    inside[int(torch.argmin((freqs - (low + high) / 2).abs()))] = True
                averaging[inside, band] = 1.0 / float(inside.sum())
            taper = torch.hann_window(n, periodic=False, dtype=torch.float32)
            self._designs[key] = (taper.to(device), averaging.to(device))
        return self._designs[key]

    def precompute(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter-free part, (B, C * bands) log band powers: computed once per window, `embed`
        takes them in place of the window (training then only runs the batch norm and the head)."""
        return self.band_power(x).flatten(1)

    def embed(self, x: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
        """Normalised log band powers (B, C * bands) of windows (B, C, N, P), or of `precompute`d
        features (B, C * bands); `pooling` is accepted for the head's API (one vector per window)."""
        features = x if x.ndim == 2 else self.precompute(x)
        return self.norm(features)

    def embedding_width(self, pooling: str = "mean", shape: tuple[int, int] | None = None) -> int:
        return self.config.d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)
