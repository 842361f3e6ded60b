"""Signal augmentations for contrastive pretraining, drawn from a caller's torch.Generator."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def draw(sampler, shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """`sampler` (torch.rand, torch.randn) on the generator's device, then moved to `like`'s device.

    A CPU generator cannot fill a GPU tensor, and drawing on it keeps runs seeded alike anywhere.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    return sampler(shape, generator=generator, device=device, dtype=dtype or like.dtype).to(like.device)


class GeneratorInState:
    """Mixin for modules drawing from `self.generator`: its state travels in the state_dict.

    A run resumed from a checkpoint then continues the same stream of masks, groups and noise.
    """

    generator: torch.Generator

    def get_extra_state(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])


def scale_amplitude(
    x: torch.Tensor, low: float = 0.8, high: float = 1.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Multiply each window (..., channels, time) by one factor drawn uniformly from [low, high]."""
    if not 0 < low <= high:
        raise ValueError(f"amplitude scale range must satisfy 0 < low <= high, got ({low!r}, {high!r})")
    if x.ndim < 2:
        raise ValueError(f"scale_amplitude expects (..., channels, time), got shape {tuple(x.shape)}")
    factor = low + (high - low) * draw(torch.rand, tuple(x.shape[:-2]) + (1, 1), generator, x)
    return x * factor


def add_noise_at_snr(x: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise whose power is the signal's power (per series, last axis) / 10^(snr/10)."""
    signal_power = x.pow(2).mean(dim=-1, keepdim=True)
    noise_std = torch.sqrt(signal_power / 10 ** (snr_db / 10))
    return x + noise_std * draw(torch.randn, tuple(x.shape), generator, x)


@dataclass
class AugmentConfig:
    scale_low: float = 0.8
    scale_high: float = 1.2
    snr_db: float | None = 20.0  # None: no noise
    enabled: bool = True

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.enabled:
            return x
        x = scale_amplitude(x, self.scale_low, self.scale_high, generator)
        return x if self.snr_db is None else add_noise_at_snr(x, self.snr_db, generator)
