"""Dual masking statistics, guards and reproducibility; the ECG objective can be optimised."""
from __future__ import annotations

import pytest
import torch

from physiofm.encoders import CBraMod, FusionClassifier, FusionHeadConfig
from physiofm.objectives import MaskedReconstruction, SupervisedClassification, dual_mask, masked_mse


@pytest.mark.parametrize("intra,inter", [(0.5, 0.25), (0.3, 0.0), (0.0, 0.4), (0.8, 0.6)])
def test_masked_fraction_and_whole_leads_follow_the_ratios(intra, inter):
    b, c, n = 4000, 12, 10
    mask = dual_mask((b, c, n), intra, inter, torch.Generator().manual_seed(1))
    assert mask.dtype == torch.bool and mask.shape == (b, c, n)
    expected = 1 - (1 - intra) * (1 - inter)
    se = (expected * (1 - expected) / (b * c)) ** 0.5  # leads are the unit of dependence
    assert abs(mask.float().mean().item() - expected) < 5 * se + 1e-3
    whole = inter + (1 - inter) * intra ** n  # a lead is whole-masked by inter, or by chance by intra
    se_whole = (whole * (1 - whole) / (b * c)) ** 0.5
    assert abs(mask.all(dim=-1).float().mean().item() - whole) < 5 * se_whole + 1e-3


def test_never_masks_a_whole_window():
    mask = dual_mask((50_000, 2, 2), 0.95, 0.9, torch.Generator().manual_seed(0))
    assert not mask.flatten(1).all(dim=1).any()
    assert mask.flatten(1).sum(dim=1).max() == 3  # the guard unmasks exactly one patch


def test_same_seed_same_mask_other_seed_other_mask():
    a = dual_mask((8, 12, 10), 0.5, 0.25, torch.Generator().manual_seed(42))
    b = dual_mask((8, 12, 10), 0.5, 0.25, torch.Generator().manual_seed(42))
    c = dual_mask((8, 12, 10), 0.5, 0.25, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_plain_cbramod_masking_is_inter_zero():
    mask = dual_mask((2000, 19, 30), 0.5, 0.0, torch.Generator().manual_seed(3))
    assert abs(mask.float().mean().item() - 0.5) < 0.005
    assert mask.all(dim=-1).float().mean().item() < 1e-3


def test_absent_leads_are_never_masked_nor_left_as_the_only_visible_patch():
    present = torch.zeros(3000, 12, dtype=torch.bool)
    present[:, :2] = True  # a 2-lead Holter record zero-filled to 12 leads
    mask = dual_mask((3000, 12, 2), 0.9, 0.9, torch.Generator().manual_seed(5), present=present)
    assert not mask[:, 2:].any()
    visible_present = (~mask[:, :2]).flatten(1).any(dim=1)
    assert visible_present.all()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_invalid_ratios_are_named(bad):
    with pytest.raises(ValueError, match=r"intra_ratio must be in \[0, 1\)"):
        dual_mask((1, 2, 3), bad, 0.0)
    with pytest.raises(ValueError, match=r"inter_ratio must be in \[0, 1\)"):
        dual_mask((1, 2, 3), 0.5, bad)


def test_masked_mse_scores_masked_patches_only():
    target = torch.zeros(1, 2, 3, 4)
    pred = torch.zeros(1, 2, 3, 4)
    pred[0, 0, 0] = 2.0  # wrong, but visible: not scored
    pred[0, 1, 2] = 1.0  # wrong and masked
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    mask[0, 1, 2] = mask[0, 1, 1] = True
    assert masked_mse(pred, target, mask).item() == pytest.approx(0.5)


def test_ecg_pretraining_lowers_the_masked_loss_on_a_fixed_batch(one_torch_thread):
    torch.manual_seed(0)
    # the symmetric ECG encoder is the CBraMod class; two layers here (seconds, not a minute), the
    # official 12 in the README's end-to-end run (tests/test_jobs_main.py), whose loss falls too
    encoder = CBraMod(n_layer=2)
    objective = MaskedReconstruction(encoder, intra_ratio=0.5, inter_ratio=0.25, seed=0)
    t = torch.linspace(0, 10, 2000)
    leads = torch.stack([torch.sin(2 * torch.pi * 1.2 * t + k) + 0.1 * torch.randn(2000) for k in range(12)])
    batch = {"x": leads.reshape(1, 12, 10, 200).repeat(2, 1, 1, 1)}
    optimizer = torch.optim.AdamW(objective.parameters(), lr=5e-4, weight_decay=0.05)
    losses = []
    for _ in range(24):
        objective.reseed(0)  # the same masks every step: the loss change is learning, not luck
        loss, metrics = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert 0.5 < metrics["masked_fraction"].item() < 0.8
    assert losses[-1] < 0.25 * losses[0], losses


def test_absent_leads_are_fed_masked_and_not_scored():
    encoder = CBraMod(n_layer=1).eval()  # no dropout: the two passes must be comparable
    objective = MaskedReconstruction(encoder, 0.5, 0.25, seed=0)
    x = torch.randn(2, 12, 3, 200)
    present = torch.zeros(2, 12, dtype=torch.bool)
    present[:, :2] = True
    x_absent_changed = x.clone()
    x_absent_changed[:, 2:] = 100.0  # whatever sits in absent leads must not matter
    loss_a, _ = objective({"x": x, "channel_mask": present})
    objective.reseed(0)
    loss_b, _ = objective({"x": x_absent_changed, "channel_mask": present})
    assert loss_a.item() == pytest.approx(loss_b.item(), rel=1e-5)


def test_fusion_head_frozen_and_trainable():
    eeg, ecg = CBraMod(n_layer=1), CBraMod(n_layer=1)
    batch = {"eeg": torch.randn(4, 19, 2, 200), "ecg": torch.randn(4, 12, 2, 200),
             "label": torch.tensor([0, 1, 2, 1])}
    frozen = FusionClassifier({"eeg": eeg, "ecg": ecg}, FusionHeadConfig(num_classes=3))
    assert frozen.head[0].in_features == 400
    objective = SupervisedClassification(frozen, {"eeg": "eeg", "ecg": "ecg"})
    loss, metrics = objective(batch)
    loss.backward()
    assert all(p.grad is None for p in frozen.encoders.parameters())
    assert frozen.head[0].weight.grad is not None
    assert 0.0 <= metrics["accuracy"].item() <= 1.0
    frozen.train()
    assert not frozen.encoders.training  # frozen encoders keep dropout off

    trainable = FusionClassifier({"ecg": CBraMod(n_layer=1)},
                                 FusionHeadConfig(num_classes=2, freeze_encoders=False, pooling="flatten",
                                                  flatten_shapes={"ecg": (12, 2)}))
    logits = trainable({"ecg": batch["ecg"]})
    assert logits.shape == (4, 2)
    logits.sum().backward()
    assert trainable.encoders["ecg"].proj_out[0].weight.grad is None  # the head is not used by embed
    assert trainable.encoders["ecg"].encoder.layers[0].linear1.weight.grad is not None
    with pytest.raises(KeyError, match="lack modalities"):
        trainable({"eeg": batch["eeg"]})
