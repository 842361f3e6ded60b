"""Pretraining methods: an encoder + an objective + a config, all trained by the one loop.

    masked_reconstruction   CBraMod EEG / ECG dual masking on patch windows (C, N, P)
    scmm                    soft contrastive masked modeling on DE features (C, 5)
    physiosync              LS-TCL + CM-CA on stimulus segments of EEG and a peripheral signal

Each method config says how to build its objective (`build`), which corpus columns it streams
(`columns`), which preprocessing preset prepares a raw corpus for it (`default_preset`), and what a
corpus must look like for it (`check_corpus`, run on the driver before any worker starts).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from physiofm.data.channels import DEAP_EEG_32, SEED_62
from physiofm.encoders.cbramod import CBraMod, CBraModConfig
from physiofm.encoders.physiosync import RESOLUTION_DIM, PhysioSyncEncoderConfig, ProjectorConfig
from physiofm.encoders.scmm import FeatureScalingConfig, SCMMConfig
from physiofm.objectives.augment import AugmentConfig
from physiofm.objectives.base import PretrainingObjective
from physiofm.objectives.masking import MaskedReconstruction
from physiofm.objectives.physiosync import VARIANTS, PhysioSyncObjectiveConfig, PhysioSyncPretraining
from physiofm.objectives.scmm import SOFT_WEIGHT_SETTINGS, SCMMObjectiveConfig
from physiofm.platform.config import ConfigError, MethodConfig


@dataclass
class MaskedReconstructionConfig(MethodConfig):
    """CBraMod masked patch reconstruction; with `inter_ratio > 0`, the ECG dual-masking method."""

    name: ClassVar[str] = "masked_reconstruction"
    modality: Literal["eeg", "ecg"] = "eeg"
    encoder: CBraModConfig = field(default_factory=CBraModConfig)
    intra_ratio: float = 0.5
    inter_ratio: float = 0.0
    init_from: str = ""  # official CBraMod weights or a physiofm export (local path or s3://)

    def validate(self) -> None:
        for key in ("intra_ratio", "inter_ratio"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1) (a masking probability), got {value!r}")
        if self.modality not in ("eeg", "ecg"):
            raise ConfigError(f"method.modality must be one of ['eeg', 'ecg'], got {self.modality!r}")

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return MaskedReconstruction.input_columns, MaskedReconstruction.optional_columns

    @property
    def default_preset(self) -> str:
        return "cbramod-eeg" if self.modality == "eeg" else "ecg"

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        shape = shapes.get("x")
        if shape is None or len(shape) != 3:
            raise ConfigError(f"method {self.name} needs a corpus column 'x' of windows shaped "
                              f"(channels, patches, samples); the corpus has {dict(shapes)}")
        if shape[-1] != self.encoder.patch_size:
            raise ConfigError(f"corpus windows have {shape[-1]} samples per patch but "
                              f"method.encoder.patch_size is {self.encoder.patch_size}")

    def build(self, seed: int = 0, initial_weights: Any = None) -> PretrainingObjective:
        """`initial_weights`: an opened `init_from` file (bytes buffer) or None to start from scratch."""
        if initial_weights is not None:
            encoder = CBraMod.from_pretrained(initial_weights)
            if encoder.config.patch_size != self.encoder.patch_size:
                raise ConfigError(f"method.init_from has patch size {encoder.config.patch_size}, "
                                  f"method.encoder.patch_size is {self.encoder.patch_size}")
        else:
            encoder = CBraMod(self.encoder)
        return MaskedReconstruction(encoder, self.intra_ratio, self.inter_ratio, seed=seed)


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


PHYSIOSYNC_LAYOUTS = {"deap": (32, 1), "dreamer": (14, 2)}  # (EEG channels, peripheral: GSR / two ECG leads)
RESOLUTIONS = ("long", "short", "both")


@dataclass
class PhysioSyncMethodConfig(MethodConfig):
    """PhysioSync pretraining (LS-TCL + CM-CA) on stimulus segments of all subjects.

    The corpus holds one row per (subject, trial, 5-s window); `prepare_datasets` stacks the rows of
    every subject that saw the same segment into `eeg` (S, C, T) and `peripheral` (S, C_p, T),
    dropping (and counting) segments that lack a subject. Validation holds out whole trials.
    `resolution`: long trains on the 5-s windows, short on their `short_slices` slices as separate
    segments, both trains long and short encoders together (losses summed). Channel counts and the
    window length come from the corpus (`eeg_channels`, `peripheral_channels`, `window_samples`:
    values given are replaced).
    """

    name: ClassVar[str] = "physiosync"
    grouping_columns: ClassVar[tuple[str, ...]] = ("dataset", "session", "trial", "window_index", "subject")
    validation_by: ClassVar[tuple[str, ...]] = ("dataset", "session", "trial")
    dataset: str = ""  # "deap" or "dreamer": the corpus must have that layout's channels; "" = any
    resolution: str = "both"
    variant: str = "dependent"  # LS-TCL of the subject-dependent code, or "cross": NT-Xent
    tau: float | None = None  # None: the published 0.1 (dependent) or 0.07 (cross)
    long_dim: int = RESOLUTION_DIM["long"]  # published token widths
    short_dim: int = RESOLUTION_DIM["short"]
    depth: int = 3
    heads: int = 4
    dropout: float = 0.2
    short_slices: int = 5
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    head_dim: int = 1024
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    subjects_per_group: int | None = None  # None: all subjects of a segment, in two halves
    eeg_channels: int = 0
    peripheral_channels: int = 0
    window_samples: int = 0

    def validate(self) -> None:
        choices = (("dataset", ("", *PHYSIOSYNC_LAYOUTS)), ("resolution", RESOLUTIONS), ("variant", VARIANTS))
        for key, allowed in choices:
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method.{key} must be one of {list(allowed)}, got {getattr(self, key)!r}")
        for key in ("long_dim", "short_dim", "depth", "heads", "short_slices", "head_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"method.{key} must be a positive integer, got {value!r}")
        for key in ("long_dim", "short_dim"):
            if getattr(self, key) % self.heads:
                raise ConfigError(f"method.{key}={getattr(self, key)} must be divisible by method.heads={self.heads}")
        if self.tau is not None and self.tau <= 0:
            raise ConfigError(f"method.tau must be > 0, got {self.tau!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"method.dropout must be in [0, 1), got {self.dropout!r}")
        if self.subjects_per_group is not None and self.subjects_per_group < 1:
            raise ConfigError(f"method.subjects_per_group must be >= 1 or null (all subjects), "
                              f"got {self.subjects_per_group!r}")
        if not 0.0 < self.augment.scale_low <= self.augment.scale_high:
            raise ConfigError(f"method.augment needs 0 < scale_low <= scale_high, got "
                              f"({self.augment.scale_low!r}, {self.augment.scale_high!r})")

    @property
    def resolutions(self) -> tuple[str, ...]:
        return ("long", "short") if self.resolution == "both" else (self.resolution,)

    @property
    def columns(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return PhysioSyncPretraining.input_columns, ()

    @property
    def default_preset(self) -> str:
        return "physiosync"

    def check_corpus(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        eeg, peripheral = shapes.get("eeg"), shapes.get("peripheral")
        if eeg is None or peripheral is None or len(eeg) != 2 or len(peripheral) != 2 or eeg[1] != peripheral[1]:
            raise ConfigError("method physiosync needs corpus columns 'eeg' and 'peripheral' of windows shaped "
                              "(channels, samples) with one length (preset 'physiosync'); the corpus has "
                              f"{dict(shapes)}")
        if self.dataset and (eeg[0], peripheral[0]) != PHYSIOSYNC_LAYOUTS[self.dataset]:
            expected = PHYSIOSYNC_LAYOUTS[self.dataset]
            raise ConfigError(f"method.dataset={self.dataset!r} means {expected[0]} EEG and {expected[1]} peripheral "
                              f"channels; the corpus has {eeg[0]} and {peripheral[0]}")
        if "short" in self.resolutions and eeg[1] % self.short_slices:
            raise ConfigError(f"windows of {eeg[1]} samples do not cut into method.short_slices={self.short_slices}")
        self.eeg_channels, self.peripheral_channels, self.window_samples = int(eeg[0]), int(peripheral[0]), int(eeg[1])

    def prepare_datasets(self, datasets: dict[str, Any], streamed: list[str]) -> dict[str, Any]:
        """Windows -> segments of every subject; the sides must not share a trial."""
        from physiofm.data import segments

        windows = {name: segments.window_keys(ds) for name, ds in datasets.items()}
        if "validation" in windows:
            shared = segments.trials_of(windows["train"]) & segments.trials_of(windows["validation"])
            if shared:
                raise ConfigError(f"physiosync: {len(shared)} trials have windows in both training and validation "
                                  f"(e.g. {sorted(shared)[0]!r}); split by whole trials, e.g. data.validation_by: "
                                  f"{list(self.validation_by)}")
        subjects = sorted(set().union(*(set(w["subject"]) for w in windows.values())))
        wanted = 2 * self.subjects_per_group if self.subjects_per_group else 2
        if len(subjects) < wanted:
            raise ConfigError(f"physiosync needs at least {wanted} subjects per segment to form two groups "
                              f"(method.subjects_per_group={self.subjects_per_group}); the corpus has {len(subjects)}")
        prepared = {}
        for name, ds in datasets.items():
            keys, dropped = segments.complete_segments(windows[name], len(subjects))
            print(f"[physiofm] physiosync {name}: {len(keys)} segments of all {len(subjects)} subjects; "
                  f"{dropped} segments dropped (a subject missing or repeated)")
            if len(keys) == 0:
                raise ConfigError(f"physiosync: no segment of the {name} side holds every one of the "
                                  f"{len(subjects)} subjects")
            ds = segments.stack_segments(ds, keys, streamed)
            if self.resolution == "short":
                ds = segments.slice_windows(ds, streamed, self.short_slices)
            # the grouping is an all-to-all shuffle: run it once, not again in every epoch
            prepared[name] = ds.materialize()
        return prepared

    def build(self, seed: int = 0, initial_weights: Any = None) -> PretrainingObjective:
        if not (self.eeg_channels and self.peripheral_channels and self.window_samples):
            raise ConfigError("method.eeg_channels/peripheral_channels/window_samples are unset: they come from the "
                              "corpus (check_corpus) before the workers build the objective")
        objectives = {
            resolution: PhysioSyncObjectiveConfig(
                eeg=self._encoder(resolution, self.eeg_channels, eeg=True),
                peripheral=self._encoder(resolution, self.peripheral_channels, eeg=False),
                projector=self.projector, head_dim=self.head_dim, variant=self.variant, tau=self.tau,
                augment=self.augment, subjects_per_group=self.subjects_per_group, seed=seed + index).build()
            for index, resolution in enumerate(self.resolutions)}
        return PhysioSyncPretraining(objectives, seed=seed)

    def _encoder(self, resolution: str, channels: int, eeg: bool) -> PhysioSyncEncoderConfig:
        long = resolution == "long"
        return PhysioSyncEncoderConfig.for_window(
            resolution, channels, eeg=eeg, n_samples=self.window_samples // (1 if long else self.short_slices),
            dim=self.long_dim if long else self.short_dim, depth=self.depth, heads=self.heads, dropout=self.dropout)


METHODS: dict[str, type[MethodConfig]] = {
    MaskedReconstructionConfig.name: MaskedReconstructionConfig,
    SCMMMethodConfig.name: SCMMMethodConfig,
    PhysioSyncMethodConfig.name: PhysioSyncMethodConfig,
}


def read_initial_weights(uri: str) -> io.BytesIO:
    """Open an `init_from` file (local path or s3://) as an in-memory buffer for `torch.load`."""
    from physiofm.data.storage import fsspec_filesystem

    fs, path = fsspec_filesystem(uri)
    if not fs.exists(path):
        raise ConfigError(f"method.init_from: no such file {uri!r}")
    with fs.open(path, "rb") as f:
        return io.BytesIO(f.read())
