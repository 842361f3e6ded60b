"""PhysioSync pretraining: LS-TCL and CM-CA (Cui et al., IEEE TCSS 2025).

Layout of every loss: N rows, rows 0..N/2-1 are view (subject group) one and the rest view two;
row i and row i + N/2 show the same stimulus segment. Features are L2-normalised inside the losses.
The subject-dependent losses match the official code to float32 precision, including its sum of
both directions; `variant="cross"` is the official cross-subject code's SimCLR NT-Xent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from physiofm.encoders.physiosync import PhysioSyncEncoderConfig, ProjectorConfig
from physiofm.objectives.augment import AugmentConfig, GeneratorInState
from physiofm.objectives.base import PretrainingObjective

VARIANTS = ("dependent", "cross")
DEFAULT_TAU = {"dependent": 0.1, "cross": 0.07}


def _halves(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if p.ndim != 2 or p.shape[0] < 2 or p.shape[0] % 2:
        raise ValueError(f"expected (N, D) features with an even N >= 2 ([view one; view two]), got {tuple(p.shape)}")
    unit = F.normalize(p, dim=1)
    return unit[: p.shape[0] // 2], unit[p.shape[0] // 2 :]


def temporal_contrastive_logits(p: torch.Tensor, tau: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N/2, N) of each direction: [cross-view similarities | same-view, self masked] / tau.

    The target of row i is column i (its other view).
    """
    a, b = _halves(p)
    self_pairs = torch.eye(a.shape[0], dtype=torch.bool, device=p.device)

    def logits(anchor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        same_view = (anchor @ anchor.T).masked_fill(self_pairs, float("-inf"))
        return torch.cat([anchor @ other.T, same_view], dim=1) / tau

    return logits(a, b), logits(b, a)


def temporal_contrastive_loss(p: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Subject-dependent LS-TCL: mean cross-entropy of view one plus that of view two."""
    from_a, from_b = temporal_contrastive_logits(p, tau)
    targets = torch.arange(from_a.shape[0], device=p.device)
    return F.cross_entropy(from_a, targets) + F.cross_entropy(from_b, targets)


def nt_xent_logits(p: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """(N, N) similarities / tau with the self pairs at -inf; row i's positive is (i + N/2) mod N."""
    a, b = _halves(p)
    unit = torch.cat([a, b])
    self_pairs = torch.eye(unit.shape[0], dtype=torch.bool, device=p.device)
    return (unit @ unit.T / tau).masked_fill(self_pairs, float("-inf"))


def nt_xent_loss(p: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Cross-subject variant: SimCLR NT-Xent averaged over all N rows."""
    n = p.shape[0]
    positives = (torch.arange(n, device=p.device) + n // 2) % n
    return F.cross_entropy(nt_xent_logits(p, tau), positives)


def _variant_loss(variant: str):
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return temporal_contrastive_loss if variant == "dependent" else nt_xent_loss


def cross_modal_head(in_dim: int, out_dim: int = 1024) -> nn.Sequential:
    """CM-CA's projection shared by both modalities: Linear then BatchNorm1d."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim))


def cross_modal_consistency_loss(
    e_eeg: torch.Tensor, e_gsr: torch.Tensor, head: nn.Module, tau: float,
    variant: Literal["dependent", "cross"] = "dependent",
) -> torch.Tensor:
    """CM-CA: project each modality with the shared head, swap the first halves, contrast.

    E' = [G_1; E_2] and G' = [E_1; G_2]; each positive pair is one group's EEG and the other
    group's peripheral signal of the same segment. Loss 0.5 L(E') + 0.5 L(G').
    """
    loss = _variant_loss(variant)
    if e_eeg.shape != e_gsr.shape:
        raise ValueError(f"EEG and peripheral features must have the same shape, got {tuple(e_eeg.shape)} and {tuple(e_gsr.shape)}")
    # the head runs once per modality: in train mode each call normalises with its own batch statistics
    eeg, gsr = head(e_eeg), head(e_gsr)
    half = eeg.shape[0] // 2
    eeg_swapped = torch.cat([gsr[:half], eeg[half:]])
    gsr_swapped = torch.cat([eeg[:half], gsr[half:]])
    return 0.5 * loss(eeg_swapped, tau) + 0.5 * loss(gsr_swapped, tau)


def draw_subject_groups(
    n_subjects: int, generator: torch.Generator | None = None, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random groups of range(n_subjects): `group_size` each, or halves (the first
    the smaller when odd) when it is None."""
    if n_subjects < 2:
        raise ValueError(f"LS-TCL needs at least 2 subjects per segment to form two groups, got {n_subjects}")
    if group_size is not None and not 1 <= group_size <= n_subjects // 2:
        raise ValueError(f"group_size must lie in [1, {n_subjects // 2}] for {n_subjects} subjects, got {group_size!r}")
    order = torch.randperm(n_subjects, generator=generator)
    size = n_subjects // 2 if group_size is None else group_size
    return order[:size], order[size : n_subjects if group_size is None else 2 * size]


def pool_subject_groups(embeddings: torch.Tensor, group_a: torch.Tensor, group_b: torch.Tensor) -> torch.Tensor:
    """(B segments, S subjects, D) -> [max over group a; max over group b], shape (2B, D)."""
    if embeddings.ndim != 3:
        raise ValueError(f"expected (segments, subjects, features) embeddings, got {tuple(embeddings.shape)}")
    n_subjects = embeddings.shape[1]
    for name, group in (("group_a", group_a), ("group_b", group_b)):
        if group.numel() == 0 or group.min() < 0 or group.max() >= n_subjects:
            raise ValueError(f"{name} must be a non-empty set of subject indices in [0, {n_subjects}), got {group.tolist()}")
    if set(group_a.tolist()) & set(group_b.tolist()):
        raise ValueError(f"subject groups must be disjoint, both hold {sorted(set(group_a.tolist()) & set(group_b.tolist()))}")
    device = embeddings.device
    pooled_a = embeddings.index_select(1, group_a.to(device)).amax(dim=1)
    pooled_b = embeddings.index_select(1, group_b.to(device)).amax(dim=1)
    return torch.cat([pooled_a, pooled_b])


@dataclass
class PhysioSyncObjectiveConfig:
    eeg: PhysioSyncEncoderConfig = field(
        default_factory=lambda: PhysioSyncEncoderConfig.for_window("short", n_channels=32, eeg=True))
    peripheral: PhysioSyncEncoderConfig = field(
        default_factory=lambda: PhysioSyncEncoderConfig.for_window("short", n_channels=1, eeg=False))
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    head_dim: int = 1024  # CM-CA's shared projection
    variant: str = "dependent"
    tau: float | None = None  # None: the published 0.1 (dependent) or 0.07 (cross)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    subjects_per_group: int | None = None  # None: all subjects of a segment, split in halves
    seed: int = 0  # subject groups and augmentation draws

    @classmethod
    def for_window(cls, resolution: str, eeg_channels: int, peripheral_channels: int, sample_rate: int = 128,
                   **overrides) -> "PhysioSyncObjectiveConfig":
        """Published encoder sizes for long (5 s) or short (1 s) windows of both modalities."""
        return cls(
            eeg=PhysioSyncEncoderConfig.for_window(resolution, eeg_channels, eeg=True, sample_rate=sample_rate),
            peripheral=PhysioSyncEncoderConfig.for_window(resolution, peripheral_channels, eeg=False,
                                                          sample_rate=sample_rate),
            **overrides,
        )

    def build(self) -> "PhysioSyncObjective":
        return PhysioSyncObjective(self)


class PhysioSyncObjective(GeneratorInState, PretrainingObjective):
    """0.5 LS-TCL(EEG) + 0.5 LS-TCL(peripheral) + CM-CA on subject-group-pooled features.

    Batch {"eeg": (B, S, C_eeg, T), "peripheral": (B, S, C_p, T)}: B stimulus segments (same trial,
    same seconds), each recorded from the same S subjects. Every step splits the subjects into two
    random disjoint groups and max-pools each group's features, giving the two views of a segment.
    """

    input_columns = ("eeg", "peripheral")

    def __init__(self, config: PhysioSyncObjectiveConfig):
        super().__init__()
        self.loss_fn = _variant_loss(config.variant)
        if config.eeg.out_dim != config.peripheral.out_dim:
            raise ValueError("EEG and peripheral encoders must give features of one size for the shared CM-CA head, "
                             f"got {config.eeg.out_dim} and {config.peripheral.out_dim}")
        self.config = config
        self.tau = DEFAULT_TAU[config.variant] if config.tau is None else config.tau
        if self.tau <= 0:
            raise ValueError(f"PhysioSyncObjectiveConfig.tau must be positive, got {config.tau!r}")
        self.eeg_encoder = config.eeg.build()
        self.peripheral_encoder = config.peripheral.build()
        self.eeg_projector = config.projector.build(config.eeg.out_dim)
        self.peripheral_projector = config.projector.build(config.peripheral.out_dim)
        self.head = cross_modal_head(config.eeg.out_dim, config.head_dim)
        self.generator = torch.Generator().manual_seed(config.seed)

    def _pooled_features(self, encoder: nn.Module, x: torch.Tensor, groups) -> torch.Tensor:
        # only the drawn subjects are encoded; the groups then index into that selection
        x = x.index_select(1, torch.cat(groups).to(x.device))
        if self.training:
            x = self.config.augment.apply(x, self.generator)
        features = encoder(x.flatten(0, 1)).view(x.shape[0], x.shape[1], -1)
        positions, n_first = torch.arange(x.shape[1]), len(groups[0])
        return pool_subject_groups(features, positions[:n_first], positions[n_first:])

    def forward(self, batch):
        eeg, peripheral = batch["eeg"], batch["peripheral"]
        if eeg.ndim != 4 or peripheral.ndim != 4 or eeg.shape[:2] != peripheral.shape[:2]:
            raise ValueError("eeg and peripheral must be (segments, subjects, channels, time) with the same segments "
                             f"and subjects, got {tuple(eeg.shape)} and {tuple(peripheral.shape)}")
        if eeg.shape[0] < 2:
            raise ValueError(f"contrastive pretraining needs at least 2 segments per batch, got {eeg.shape[0]}")
        groups = draw_subject_groups(eeg.shape[1], self.generator, self.config.subjects_per_group)
        e_eeg = self._pooled_features(self.eeg_encoder, eeg, groups)
        e_peripheral = self._pooled_features(self.peripheral_encoder, peripheral, groups)
        loss_eeg = self.loss_fn(self.eeg_projector(e_eeg), self.tau)
        loss_peripheral = self.loss_fn(self.peripheral_projector(e_peripheral), self.tau)
        loss_cross = cross_modal_consistency_loss(e_eeg, e_peripheral, self.head, self.tau, self.config.variant)
        loss = 0.5 * loss_eeg + 0.5 * loss_peripheral + loss_cross
        metrics = {"loss_tcl_eeg": loss_eeg.detach(), "loss_tcl_peripheral": loss_peripheral.detach(),
                   "loss_cross_modal": loss_cross.detach()}
        return loss, metrics

    def encoders(self):
        return {"eeg": self.eeg_encoder, "peripheral": self.peripheral_encoder}


class PhysioSyncPretraining(GeneratorInState, PretrainingObjective):
    """Long and/or short PhysioSync objectives trained together on one stream of segments.

    Batch {"eeg": (B, S, C, T), ...} as for `PhysioSyncObjective`. An objective whose encoders take
    windows of T samples gets the batch as it is; one whose encoders take T/k samples (the short
    ones beside the long ones) gets one randomly drawn of the k slices of each segment, so its
    batch is B distinct segments as in separate short pretraining. The losses are summed.
    Encoders export as `{modality}_{resolution}`.
    """

    input_columns = ("eeg", "peripheral")

    def __init__(self, objectives: dict[str, PhysioSyncObjective], seed: int = 0):
        super().__init__()
        if not objectives:
            raise ValueError("PhysioSyncPretraining needs at least one resolution's objective")
        self.resolutions = nn.ModuleDict(objectives)
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        super().reseed(seed)
        for index, objective in enumerate(self.resolutions.values()):
            objective.reseed(seed + 1 + index)

    def _slices(self, batch, length: int):
        total = batch["eeg"].shape[-1]
        if total == length:
            return batch
        if total % length:
            raise ValueError(f"segments of {total} samples cannot feed encoders of {length} samples")
        n = batch["eeg"].shape[0]
        choice = torch.randint(total // length, (n,), generator=self.generator)
        rows = torch.arange(n)
        # (B, S, C, k, L) -> (B, k, S, C, L), then one slice per segment
        return {name: batch[name].unflatten(-1, (total // length, length)).permute(0, 3, 1, 2, 4)[
            rows.to(batch[name].device), choice.to(batch[name].device)] for name in self.input_columns}

    def forward(self, batch):
        total, metrics = 0.0, {}
        for resolution, objective in self.resolutions.items():
            loss, parts = objective(self._slices(batch, objective.config.eeg.n_samples))
            total = total + loss
            metrics[f"loss_{resolution}"] = loss.detach()
            metrics.update({f"{name}_{resolution}": value for name, value in parts.items()})
        return total, metrics

    def encoders(self):
        return {f"{modality}_{resolution}": encoder for resolution, objective in self.resolutions.items()
                for modality, encoder in objective.encoders().items()}
