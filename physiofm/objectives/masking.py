"""Dual masking (intra-lead patches ∪ whole leads) and the masked-reconstruction objective.

Plain CBraMod pretraining is the special case `inter_ratio = 0` (each patch masked with p = 0.5).
The ECG method adds inter-lead masking so that whole leads must be rebuilt from the other leads.
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from physiofm.objectives.base import PretrainingObjective


def _check_ratio(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1) (a fraction of patches/leads to mask), got {value}")
    return value


def dual_mask(
    shape: tuple[int, int, int],
    intra_ratio: float,
    inter_ratio: float,
    generator: torch.Generator | None = None,
    *,
    present: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean mask (True = masked) of shape (B, C, N) for windows of C leads × N patches.

    Each (lead, patch) is masked with probability `intra_ratio`, each whole lead with probability
    `inter_ratio`; the mask is their union. A window is never masked entirely: where every patch
    would be masked, one patch drawn at random stays visible. `present` (B, C) marks the leads a
    window actually has (zero-filled absent leads are neither masked nor counted as visible).
    Draws come from `generator` (on the CPU) so that a seed reproduces the mask.
    """
    intra_ratio = _check_ratio("intra_ratio", intra_ratio)
    inter_ratio = _check_ratio("inter_ratio", inter_ratio)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be (B, C, N) with positive sizes, got {tuple(shape)}")
    b, c, n = (int(s) for s in shape)
    intra = torch.rand((b, c, n), generator=generator) < intra_ratio
    inter = torch.rand((b, c, 1), generator=generator) < inter_ratio
    mask = intra | inter
    tiebreak = torch.rand((b, c, n), generator=generator)
    if present is None:
        present_cn = torch.ones((b, c, n), dtype=torch.bool)
    else:
        if tuple(present.shape) != (b, c):
            raise ValueError(f"present must have shape (B, C) = {(b, c)}, got {tuple(present.shape)}")
        present_cn = present.detach().to("cpu", torch.bool).unsqueeze(-1).expand(b, c, n)
    mask &= present_cn
    # Guard: a window with no visible present patch gets one back, chosen at random among its patches.
    all_masked = ~(present_cn & ~mask).flatten(1).any(dim=1) & present_cn.flatten(1).any(dim=1)
    if all_masked.any():
        keep = tiebreak.masked_fill(~present_cn, -1.0).flatten(1).argmax(dim=1)
        rows = all_masked.nonzero().squeeze(1)
        mask.view(b, -1)[rows, keep[rows]] = False
    return mask if device is None else mask.to(device)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the samples of masked patches only (mask (B, C, N), True = masked)."""
    selected = mask.bool()
    if not selected.any():
        return prediction.sum() * 0.0  # keeps the graph (and DeepSpeed's reductions) alive
    return F.mse_loss(prediction[selected], target[selected])


class MaskedReconstruction(PretrainingObjective):
    """Masked patch reconstruction with dual masking: CBraMod's objective, and the ECG method's.

    Batch: `x` (B, C, N, P) windows; optional `channel_mask` (B, C) bool, True where the lead is
    present (absent leads are zero-filled by the data pipeline: fed as masked, never scored).
    """

    def __init__(self, encoder: nn.Module, intra_ratio: float = 0.5, inter_ratio: float = 0.0,
                 seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.intra_ratio = _check_ratio("intra_ratio", intra_ratio)
        self.inter_ratio = _check_ratio("inter_ratio", inter_ratio)
        self.generator = torch.Generator().manual_seed(seed)

    input_columns = ("x",)
    optional_columns = ("channel_mask",)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = batch["x"]
        b, c, n, _ = x.shape
        present = batch.get("channel_mask")
        mask = dual_mask((b, c, n), self.intra_ratio, self.inter_ratio, self.generator,
                         present=present, device=x.device)
        input_mask = mask if present is None else mask | ~present.to(x.device, torch.bool).unsqueeze(-1)
        reconstruction = self.encoder(x, input_mask)
        loss = masked_mse(reconstruction, x, mask)
        return loss, {"masked_fraction": mask.float().mean().detach()}

    def encoders(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}
