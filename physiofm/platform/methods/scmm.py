"""SCMM: soft contrastive masked modeling on differential-entropy features."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from physiofm.data.channels import DEAP_EEG_32, SEED_62
from physiofm.encoders.scmm import FeatureScalingConfig, SCMMConfig
from physiofm.objectives.base import PretrainingObjective
from physiofm.objectives.scmm import SOFT_WEIGHT_SETTINGS, SCMMObjectiveConfig
from physiofm.platform.config import ConfigError, MethodConfig

SCMM_CORPORA = ("seed", "seed_iv", "deap")


@dataclass
class SCMMMethodConfig(MethodConfig):
    """SCMM pretraining on the source corpus of a cross-corpus pair: DE features (C, 5) per window.

    (alpha, sharpness, tau) default to the published setting of (source, target). DEAP on either
    side means 32 channels by 10-20 name (preset `scmm-de-deap32`), else SEED's 62. The channel and
    band counts of `model.encoder` always come from the corpus. `feature_min`/`feature_max` are
    fitted on the training side by `prepare_datasets` (values given are replaced) and scale every
    batch on the workers.
    """

    name: ClassVar[str] = "scmm"
    resume_may_change: ClassVar[tuple[str, ...]] = ("alpha", "sharpness", "tau", "mask_ratio", "mask_threshold",
                                                    "feature_min", "feature_max")
    source: str = "seed"
    target: str = "seed_iv"
    model: SCMMConfig = field(default_factory=SCMMConfig)
    alpha: float | None = None  # soft-weight upper bound; None: the published one of the pair
    sharpness: float | None = None
    tau: float | None = None
    mask_ratio: float = 0.5
    mask_threshold: float = 0.1
    feature_min: tuple[float, ...] = ()
    feature_max: tuple[float, ...] = ()

    def validate(self) -> None:
        for key in ("source", "target"):
            if getattr(self, key) not in SCMM_CORPORA:
                raise ConfigError(f"method.{key} must be one of {list(SCMM_CORPORA)}, got {getattr(self, key)!r}")
        for key, value in zip(("alpha", "sharpness", "tau"), self.soft_weights()):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"method.{key} must be > 0, got {value!r}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"method.mask_ratio must be in [0, 1), got {self.mask_ratio!r}")
        if not 0.0 <= self.mask_threshold <= 1.0:
            raise ConfigError(f"method.mask_threshold must be in [0, 1], got {self.mask_threshold!r}")
        if len(self.feature_min) != len(self.feature_max):
            raise ConfigError(f"method.feature_min and method.feature_max must have one length, got "
                              f"{len(self.feature_min)} and {len(self.feature_max)}")

    def soft_weights(self) -> tuple[float, float, float]:
        """(alpha, sharpness, tau): the given values, the rest from the pair's published setting."""
        given = (self.alpha, self.sharpness, self.tau)
        if None not in given:
            return given  # type: ignore[return-value]
        if (self.source, self.target) not in SOFT_WEIGHT_SETTINGS:
            allowed = ", ".join(f"{s}->{t}" for s, t in SOFT_WEIGHT_SETTINGS)
            raise ConfigError(f"no published SCMM setting for {self.source}->{self.target} (published: {allowed}); "
                              "give method.alpha, method.sharpness and method.tau")
        published = SOFT_WEIGHT_SETTINGS[(self.source, self.target)]
        return tuple(p if g is None else g for g, p in zip(given, published))  # type: ignore[return-value]

    @property
    def deap_aligned(self) -> bool:
        return "deap" in (self.source, self.target)

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return ("x",), ()

    @property
    def default_preset(self) -> str:
        return "scmm-de-deap32" if self.deap_aligned else "scmm-de"

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get("x")
        if shape is None or len(shape) != 2:
            raise ConfigError(f"method scmm needs a corpus column 'x' of DE features shaped (channels, bands); "
                              f"the corpus has {dict(shapes)}")
        # with DEAP on either side, SEED's 62 are reduced to DEAP's 32 by 10-20 name (preset scmm-de-deap32)
        channels = len(DEAP_EEG_32) if self.deap_aligned else len(SEED_62)
        if shape[0] != channels:
            raise ConfigError(f"SCMM {self.source}->{self.target} needs DE windows of {channels} channels (preset "
                              f"{self.default_preset!r}); the corpus has {shape[0]} (shape {tuple(shape)})")
        self.model.encoder.n_channels, self.model.encoder.n_bands = int(shape[0]), int(shape[1])

    def prepare_datasets(self, datasets: dict[str, Any], streamed: list[str]) -> dict[str, Any]:
        """Fit the per-feature min-max on the training side only; stream `x`."""
        from physiofm.data.segments import column_range

        try:
            minimum, maximum = column_range(datasets["train"], "x")
        except ValueError as err:
            raise ConfigError(f"data.corpus: cannot fit SCMM's feature scaling on the training side: {err}") from err
        self.feature_min = tuple(float(v) for v in minimum.ravel())
        self.feature_max = tuple(float(v) for v in maximum.ravel())
        return super().prepare_datasets(datasets, streamed)

    def build(self, seed: int = 0, initial_weights: Any = None) -> PretrainingObjective:
        if not self.feature_min:
            raise ConfigError("method.feature_min/feature_max are empty: they are fitted on the training side by "
                              "prepare_datasets before the workers build the objective")
        alpha, sharpness, tau = self.soft_weights()
        return SCMMObjectiveConfig(
            model=self.model, mask_ratio=self.mask_ratio, mask_threshold=self.mask_threshold, alpha=alpha,
            sharpness=sharpness, tau=tau, seed=seed,
            scaling=FeatureScalingConfig(self.feature_min, self.feature_max)).build()
