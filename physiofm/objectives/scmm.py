"""SCMM: soft contrastive masked modeling on DE features (Liu et al., ACM MM 2025).

Batch layout of every loss here: N = 2B rows, rows 0..B-1 are the originals and rows B..2B-1
their masked copies, so the positive of row i is row (i + B) mod N. The losses match the official
implementation to float32 precision; unlike it, hybrid masking never writes into the originals.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from physiofm.encoders.scmm import FeatureScalingConfig, SCMMConfig
from physiofm.objectives.augment import GeneratorInState, draw
from physiofm.objectives.base import PretrainingObjective

# (alpha, sharpness, tau) of the published transfer settings, keyed by (source, target) corpus.
SOFT_WEIGHT_SETTINGS: dict[tuple[str, str], tuple[float, float, float]] = {
    ("seed_iv", "seed"): (0.5, 0.05, 0.5),
    ("deap", "seed"): (0.5, 0.05, 0.5),
    ("seed", "seed_iv"): (0.75, 0.5, 0.5),
    ("seed", "deap"): (0.5, 0.2, 0.05),
}


def _check_pairs(n: int, what: str) -> None:
    if n < 2 or n % 2:
        raise ValueError(f"{what} must have an even number of rows [originals; masked], got {n}")


def positive_index(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Column of each row's positive: (i + n/2) mod n."""
    return (torch.arange(n, device=device) + n // 2) % n


def hybrid_mask(
    x: torch.Tensor, ratio: float = 0.5, threshold: float = 0.1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked copy of x (B, C, F) and its keep mask; x itself is left untouched.

    Per (sample, channel) a uniform draw above `threshold` selects element-wise random masking
    (each entry kept with probability 1 - ratio); otherwise the whole channel is dropped with
    probability `ratio`. Either way the expected masked fraction is `ratio`.
    """
    if x.ndim != 3:
        raise ValueError(f"hybrid_mask expects x of shape (batch, channels, features), got {tuple(x.shape)}")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1), got {ratio!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"mask threshold must lie in [0, 1], got {threshold!r}")
    b, c, f = x.shape
    element_keep = draw(torch.rand, (b, c, f), generator, x, torch.float32) >= ratio
    channel_keep = draw(torch.rand, (b, c), generator, x, torch.float32) >= ratio
    use_elements = draw(torch.rand, (b, c), generator, x, torch.float32) > threshold
    keep = torch.where(use_elements[..., None], element_keep, channel_keep[..., None])
    return x.masked_fill(~keep, 0.0), keep


def _pairwise_cosine(flat: torch.Tensor, chunk_elements: int = 1 << 18) -> torch.Tensor:
    """(N, N) cosine similarities, summed element-wise as upstream does.

    A matmul is faster but sums in another order, and the soft weights amplify that rounding by
    1/sharpness (measured 6e-6 relative at sharpness 0.05). Row chunks of about 1 MB keep the
    products in cache (0.1 s for N = 512 of 62 x 5 on one CPU core).
    """
    n = flat.shape[0]
    rows = max(1, chunk_elements // max(1, n * flat.shape[1]))
    return torch.cat(
        [F.cosine_similarity(flat[i : i + rows, None], flat[None], dim=2) for i in range(0, n, rows)]
    )


@torch.no_grad()
def soft_assignment(x: torch.Tensor, alpha: float, sharpness: float) -> torch.Tensor:
    """Soft negative weights W (N, N) from cosine distances between the inputs x (N, C, F).

    D = -cos on flattened inputs; its diagonal takes the smallest off-diagonal value; each column
    is min-max scaled to [0, 1]; W = 2 alpha / (1 + exp(D / sharpness)). Inputs only: no gradient.
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"soft_assignment needs at least 2 samples, got {n}")
    flat = x.reshape(n, -1)
    dist = -_pairwise_cosine(flat)
    diagonal = torch.eye(n, dtype=torch.bool, device=x.device)
    dist = dist.masked_fill(diagonal, dist[~diagonal].min())
    low, high = dist.amin(dim=0), dist.amax(dim=0)
    span = high - low
    # scikit-learn's MinMaxScaler arithmetic (upstream's), constant columns included: bitwise equal
    scale = 1.0 / torch.where(span < 10 * torch.finfo(dist.dtype).eps, torch.ones_like(span), span)
    scaled = dist * scale - low * scale
    return 2 * alpha / (1 + torch.exp(scaled / sharpness))


def soft_contrastive_loss(x: torch.Tensor, z: torch.Tensor, alpha: float, sharpness: float, tau: float) -> torch.Tensor:
    """Soft-weighted InfoNCE on unnormalised similarities S = z zᵀ (self pairs excluded).

    Each row is a soft cross-entropy over its N-1 partners: target 1 for the positive and W for
    the negatives; the sum is divided by N(N-1) as upstream.
    """
    n = z.shape[0]
    _check_pairs(n, "soft_contrastive_loss input")
    if x.shape[0] != n:
        raise ValueError(f"x and z must have the same number of rows, got {x.shape[0]} and {n}")
    targets = soft_assignment(x, alpha, sharpness).to(z.dtype)
    rows = torch.arange(n, device=z.device)
    targets[rows, positive_index(n, z.device)] = 1.0
    diagonal = torch.eye(n, dtype=torch.bool, device=z.device)
    log_probs = torch.log_softmax((z @ z.T / tau).masked_fill(diagonal, float("-inf")), dim=1)
    return -(targets * log_probs.masked_fill(diagonal, 0.0)).sum() / (n * (n - 1))


def aggregate(z: torch.Tensor, h: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Similarity-weighted mix of the other rows' features: A = softmax(S/τ, self excluded), A·h."""
    n = z.shape[0]
    if h.shape[0] != n:
        raise ValueError(f"z and h must have the same number of rows, got {n} and {h.shape[0]}")
    diagonal = torch.eye(n, dtype=torch.bool, device=z.device)
    weights = torch.softmax((z @ z.T / tau).masked_fill(diagonal, float("-inf")), dim=1)
    return weights, weights @ h.reshape(n, -1)


def reconstruction_loss(x_in: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """MSE between the flattened inputs (a fixed target) and the decoder output."""
    return F.mse_loss(x_hat, x_in.reshape(x_in.shape[0], -1).detach())


class UncertaintyWeighting(nn.Module):
    """Σ_k 0.5/σ_k² · L_k + log(1 + σ_k²) with learnable σ (init 1)."""

    def __init__(self, n_losses: int):
        super().__init__()
        self.sigma = nn.Parameter(torch.ones(n_losses))

    def forward(self, *losses: torch.Tensor) -> torch.Tensor:
        if len(losses) != self.sigma.numel():
            raise ValueError(f"UncertaintyWeighting holds {self.sigma.numel()} weights, got {len(losses)} losses")
        variance = self.sigma**2
        return sum(0.5 / variance[k] * loss + torch.log1p(variance[k]) for k, loss in enumerate(losses))


@dataclass
class SCMMObjectiveConfig:
    model: SCMMConfig = field(default_factory=SCMMConfig)
    mask_ratio: float = 0.5
    mask_threshold: float = 0.1
    alpha: float = 0.5  # upper bound of the soft weights ("upper_bound" upstream)
    sharpness: float = 0.05
    tau: float = 0.5
    seed: int = 0  # masking draws
    scaling: FeatureScalingConfig | None = None  # min-max fitted on the training side; None: inputs as they are

    @classmethod
    def for_transfer(cls, source: str, target: str, **overrides) -> "SCMMObjectiveConfig":
        """The published (alpha, sharpness, tau) of a source -> target corpus pair ("SEED-IV" = "seed_iv")."""
        source, target = (name.lower().replace("-", "_") for name in (source, target))
        if (source, target) not in SOFT_WEIGHT_SETTINGS:
            allowed = ", ".join(f"{s}->{t}" for s, t in SOFT_WEIGHT_SETTINGS)
            raise ValueError(f"no published SCMM setting for {source}->{target}; allowed: {allowed}")
        alpha, sharpness, tau = SOFT_WEIGHT_SETTINGS[(source, target)]
        return cls(**{"alpha": alpha, "sharpness": sharpness, "tau": tau, **overrides})

    def build(self) -> "SCMMObjective":
        return SCMMObjective(self)


class SCMMObjective(GeneratorInState, PretrainingObjective):
    """Batch {"x": (B, C, F) DE features} -> uncertainty-weighted soft contrastive + reconstruction.

    With `config.scaling`, features are min-max scaled first; the scaler is exported beside the
    encoder so that downstream use scales target data with the source's fit.
    """

    input_columns = ("x",)

    def __init__(self, config: SCMMObjectiveConfig):
        super().__init__()
        for name in ("sharpness", "tau"):
            if getattr(config, name) <= 0:
                raise ValueError(f"SCMMObjectiveConfig.{name} must be positive, got {getattr(config, name)!r}")
        self.config = config
        self.model = config.model.build()
        self.weighting = UncertaintyWeighting(2)
        self.scaling = config.scaling.build() if config.scaling is not None else None
        self.generator = torch.Generator().manual_seed(config.seed)

    def forward(self, batch):
        cfg = self.config
        x = batch["x"] if self.scaling is None else self.scaling(batch["x"])
        masked, keep = hybrid_mask(x, cfg.mask_ratio, cfg.mask_threshold, self.generator)
        x_in = torch.cat([x, masked])
        h, z = self.model(x_in)
        loss_c = soft_contrastive_loss(x_in, z, cfg.alpha, cfg.sharpness, cfg.tau)
        _, h_mixed = aggregate(z, h, cfg.tau)
        loss_r = reconstruction_loss(x_in, self.model.decoder(h_mixed))
        loss = self.weighting(loss_c, loss_r)
        sigma = self.weighting.sigma.detach()
        metrics = {
            "loss_contrastive": loss_c.detach(),
            "loss_reconstruction": loss_r.detach(),
            "sigma_contrastive": sigma[0],
            "sigma_reconstruction": sigma[1],
            "masked_fraction": 1.0 - keep.float().mean(),
        }
        return loss, metrics

    def encoders(self):
        parts = {"encoder": self.model.encoder}
        if self.scaling is not None:
            parts["feature_scaling"] = self.scaling
        return parts
