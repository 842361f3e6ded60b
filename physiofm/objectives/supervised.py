"""Supervised classification objective for fine-tuning heads (fusion or single modality)."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from physiofm.objectives.base import PretrainingObjective


class SupervisedClassification(PretrainingObjective):
    """Cross-entropy (with label smoothing) of a classifier fed by named modality columns.

    `inputs` maps the classifier's modality names to corpus columns, e.g. {"eeg": "eeg", "ecg": "ecg"}.
    """

    def __init__(self, classifier: nn.Module, inputs: Mapping[str, str], label_column: str = "label",
                 label_smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.classifier = classifier
        self.inputs = dict(inputs)
        self.label_column = label_column
        self.label_smoothing = label_smoothing
        self.input_columns = (*self.inputs.values(), label_column)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.classifier({m: batch[col] for m, col in self.inputs.items()})
        labels = batch[self.label_column].long()
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def encoders(self) -> dict[str, nn.Module]:
        return {"classifier": self.classifier}
