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
    A classifier that trains on a loss of its own (late fusion: one per modality) gives it through
    `training_loss(inputs, labels, label_smoothing) -> (loss, logits)`. With `backbone_lr`, the
    classifier's encoders and its head are two parameter groups with their own learning rates
    (CBraMod's recipe: backbone 1e-4, head 1e-3).
    """

    def __init__(self, classifier: nn.Module, inputs: Mapping[str, str], label_column: str = "label",
                 label_smoothing: float = 0.1, backbone_lr: float | None = None):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.classifier = classifier
        self.inputs = dict(inputs)
        self.label_column = label_column
        self.label_smoothing = label_smoothing
        self.backbone_lr = backbone_lr
        self.input_columns = (*self.inputs.values(), label_column)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = {m: batch[col] for m, col in self.inputs.items()}
        labels = batch[self.label_column].long()
        if hasattr(self.classifier, "training_loss") and self.training:
            loss, logits = self.classifier.training_loss(inputs, labels, self.label_smoothing)
        else:
            logits = self.classifier(inputs)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        accuracy = (logits.argmax(-1) == labels).float().mean()
        return loss, {"accuracy": accuracy.detach()}

    def predict(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities (B, classes)."""
        return self.classifier({m: batch[col] for m, col in self.inputs.items()}).softmax(-1)

    def parameter_groups(self, lr: float) -> list[dict]:
        trainable = [p for p in self.parameters() if p.requires_grad]
        encoders = getattr(self.classifier, "encoders", None)
        if self.backbone_lr is None or encoders is None:
            return [{"params": trainable}]
        backbone_ids = {id(p) for p in encoders.parameters()}
        backbone = [p for p in trainable if id(p) in backbone_ids]
        head = [p for p in trainable if id(p) not in backbone_ids]
        return [group for group in ({"params": backbone, "lr": self.backbone_lr, "name": "backbone"},
                                    {"params": head, "lr": lr, "name": "head"}) if group["params"]]

    def encoders(self) -> dict[str, nn.Module]:
        return {"classifier": self.classifier}
