"""PhysioSync: LS-TCL + CM-CA on stimulus segments of EEG and a peripheral signal."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from physiofm.encoders.physiosync import RESOLUTION_DIM, PhysioSyncEncoderConfig, ProjectorConfig
from physiofm.objectives.augment import AugmentConfig
from physiofm.objectives.base import PretrainingObjective
from physiofm.objectives.physiosync import VARIANTS, PhysioSyncObjectiveConfig, PhysioSyncPretraining
from physiofm.platform.config import ConfigError, MethodConfig

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
    resume_may_change: ClassVar[tuple[str, ...]] = ("dataset", "tau", "dropout", "augment", "subjects_per_group")
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
            ds = segments.stack_segments(ds, keys, streamed, segment_bytes=self._segment_bytes(len(subjects)))
            if self.resolution == "short":
                ds = segments.slice_windows(ds, streamed, self.short_slices)
            # the grouping is an all-to-all shuffle: run it once, not again in every epoch
            prepared[name] = ds.materialize()
        return prepared

    def _segment_bytes(self, n_subjects: int) -> int:
        """float32 bytes of one segment: every subject's EEG and peripheral window (0 = not known yet)."""
        return 4 * n_subjects * (self.eeg_channels + self.peripheral_channels) * self.window_samples

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
