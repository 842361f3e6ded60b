"""Self-supervised and supervised objectives (pure torch, no Ray)."""
from physiofm.objectives.base import PretrainingObjective
from physiofm.objectives.masking import MaskedReconstruction, dual_mask, masked_mse
from physiofm.objectives.supervised import SupervisedClassification

__all__ = ["PretrainingObjective", "MaskedReconstruction", "SupervisedClassification", "dual_mask",
           "masked_mse"]
