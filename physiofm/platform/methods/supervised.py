"""Supervised fine-tuning: encoders (frozen or trained with their own learning rate) + a head,
trained with `SupervisedClassification` by the one loop, one fold at a time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from physiofm.objectives.base import PretrainingObjective
from physiofm.platform.config import ConfigError, MethodConfig
from physiofm.platform.downstream import FAMILIES, HEADS, build_encoder

POOLINGS = ("mean", "flatten")


@dataclass
class SupervisedMethodConfig(MethodConfig):
    """A classifier over the windows' modality columns. `encoders` maps each modality to its encoder
    family, `inputs` to its corpus column; `shapes` (each modality's window shape) comes from the
    corpus, `num_classes` from the label scheme, `fold_stats` (SCMM's min-max) from each fold's
    training side: values given for those are replaced."""

    name: ClassVar[str] = "supervised"
    validation_by: ClassVar[tuple[str, ...]] = ("dataset", "subject", "session", "trial")
    dataset: str = ""
    label: str = ""
    num_classes: int = 2
    encoders: dict[str, str] = field(default_factory=lambda: {"eeg": "spectral"})
    inputs: dict[str, str] = field(default_factory=dict)  # modality -> corpus column ({} = the modality's name)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    head: str = "concat"
    freeze: bool = False
    pooling: str = "mean"
    hidden_dims: tuple[int, ...] = (128,)
    dropout: float = 0.1
    label_smoothing: float = 0.1
    backbone_lr: float = 1e-4  # trained encoders; the head trains at optim.lr
    fold_stats: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        bad = {m: f for m, f in self.encoders.items() if f not in FAMILIES}
        if not self.encoders or bad:
            raise ConfigError(f"method.encoders must map modalities to encoders among {sorted(FAMILIES)}, got "
                              f"{dict(self.encoders)}")
        for modality, family in self.encoders.items():
            if modality not in FAMILIES[family].modalities:
                raise ConfigError(f"encoder {family!r} takes modalities {list(FAMILIES[family].modalities)}, "
                                  f"not {modality!r}")
        forms = {FAMILIES[f].form for f in self.encoders.values()}
        if len(forms) > 1:
            raise ConfigError(f"encoders {dict(self.encoders)} need windows of different forms {sorted(forms)}: one "
                              "run fuses encoders of one window form (patch encoders spectral/cbramod/ecg together)")
        if self.head not in HEADS:
            raise ConfigError(f"method.head must be one of {sorted(HEADS)}, got {self.head!r}")
        families = set(self.encoders.values())
        if self.head == "gated" and (families != {"physiosync"} or len(self.encoders) != 2):
            raise ConfigError(f"head 'gated' fuses PhysioSync's EEG and peripheral encoders (--encoder physiosync "
                              f"with two modalities), got {dict(self.encoders)}")
        if self.head == "scmm" and (families != {"scmm"} or len(self.encoders) != 1):
            raise ConfigError(f"head 'scmm' is SCMM's classifier on its one EEG encoder (--encoder scmm), got "
                              f"{dict(self.encoders)}")
        if self.head == "late" and len(self.encoders) < 2:
            raise ConfigError("head 'late' averages the probabilities of several modalities; give two or more")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"method.pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if self.num_classes < 2:
            raise ConfigError(f"method.num_classes must be >= 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"method.dropout and method.label_smoothing must be in [0, 1), got {self.dropout} "
                              f"and {self.label_smoothing}")
        if self.backbone_lr <= 0:
            raise ConfigError(f"method.backbone_lr must be > 0, got {self.backbone_lr}")

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return (*self.column_of.values(), "label", "labels"), ()

    @property
    def column_of(self) -> dict[str, str]:
        return {m: self.inputs.get(m, m) for m in self.encoders}

    @property
    def form(self) -> str:
        return FAMILIES[next(iter(self.encoders.values()))].form

    @property
    def default_preset(self) -> str:
        return {"patches": "emotion", "de": "scmm-de", "samples": "physiosync"}[self.form]

    @property
    def needs_fold_stats(self) -> bool:
        return "scmm" in self.encoders.values()

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        for modality, column in self.column_of.items():
            if column not in shapes:
                raise ConfigError(f"modality {modality!r} needs corpus column {column!r}; the corpus has "
                                  f"{sorted(shapes)}")
            self.shapes[modality] = tuple(int(v) for v in shapes[column])

    def build(self, seed: int = 0, initial_weights: Any = None) -> PretrainingObjective:
        """`initial_weights`: {modality: {role: bytes}} of the pretrained encoders (None: fresh)."""
        import torch

        from physiofm.objectives.supervised import SupervisedClassification

        torch.manual_seed(seed)
        weights = initial_weights or {}
        encoders = {}
        for modality, family in self.encoders.items():
            shape = self.shapes.get(modality)
            if not shape:
                raise ConfigError(f"method.shapes[{modality!r}] is unset: it comes from the corpus (check_corpus)")
            encoders[modality] = build_encoder(family, shape[0], weights.get(modality), self.fold_stats.get(modality))
        classifier = self._head(encoders)
        return SupervisedClassification(classifier, {m: m for m in self.encoders}, label_column="y",
                                        label_smoothing=self.label_smoothing,
                                        backbone_lr=None if self.freeze else self.backbone_lr)

    def _head(self, encoders: dict):
        from physiofm.encoders import fusion

        if self.head == "gated":
            from physiofm.encoders.physiosync import GatedFusionConfig

            eeg = next(iter(self.encoders))
            long_dim, short_dim = self._physiosync_dims(encoders[eeg])
            classifier = GatedFusionConfig(long_dim=long_dim, short_dim=short_dim, n_slices=5,
                                           n_classes=self.num_classes, dropout=self.dropout).build()
            return fusion.GatedFusionHead(encoders, classifier, self.freeze)
        if self.head == "scmm":
            from physiofm.encoders.scmm import SCMMClassifierConfig

            (modality, encoder), = encoders.items()
            width = fusion.embedding_width(encoder, modality, "mean", {})
            classifier = SCMMClassifierConfig(feature_dim=width, n_classes=self.num_classes).build()
            return fusion.SCMMFineTuning(encoders, classifier, self.freeze)
        config = fusion.FusionHeadConfig(num_classes=self.num_classes, hidden_dims=self.hidden_dims,
                                         dropout=self.dropout, pooling=self.pooling, freeze_encoders=self.freeze,
                                         flatten_shapes={m: tuple(s[:2]) for m, s in self.shapes.items()})
        head = fusion.LateFusionClassifier if self.head == "late" else fusion.FusionClassifier
        return head(encoders, config)

    @staticmethod
    def _physiosync_dims(encoder) -> tuple[int, int]:
        if encoder.short is None:
            raise ConfigError("head 'gated' needs PhysioSync's short encoders too (eeg_short.pt, "
                              "peripheral_short.pt: pretrain with --resolution both)")
        return encoder.long.config.out_dim, encoder.short.config.out_dim
