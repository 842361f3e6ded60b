"""The contract between a pretraining method and the platform's one training loop.

A method is an encoder plus an objective. The loop streams batches (a dict of tensors named after
the corpus' columns), calls `objective(batch)`, backpropagates the returned loss, and logs the
metrics. `encoders()` names the modules that an export writes, so a trained encoder can be loaded
on its own (e.g. `CBraMod.from_pretrained`).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class PretrainingObjective(nn.Module):
    """Base class: subclasses hold their encoder(s) as submodules and implement `forward`."""

    #: corpus columns the objective reads from each batch (the loader streams only these)
    input_columns: tuple[str, ...] = ("x",)
    #: columns used when the corpus has them (e.g. `channel_mask` of zero-filled ECG leads)
    optional_columns: tuple[str, ...] = ()

    def reseed(self, seed: int) -> None:
        """Restart the objective's random draws (masks, groups, noise) from `seed`.

        The training loop calls this every step with a seed derived from (run seed, rank, step):
        ranks draw different masks, and a resumed run draws the same ones it would have drawn.
        """
        generator = getattr(self, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups (the loop's AdamW takes them as they are): by default one group
        of every trainable parameter at the run's `lr`; a fine-tuning objective gives its backbone
        and its head their own rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (scalar loss, metrics): metrics are detached scalars logged beside the loss."""
        raise NotImplementedError

    def encoders(self) -> dict[str, nn.Module]:
        """Modules exported after training, by name (e.g. {"encoder": cbramod})."""
        raise NotImplementedError
