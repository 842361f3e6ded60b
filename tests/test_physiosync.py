"""PhysioSync: parity with the official losses (fixtures), an independent float64 reference at
other shapes, subject-group pooling, augmentation, the networks, and the objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from physiofm.encoders.physiosync import (
    GatedFusionConfig,
    PhysioSyncEncoderConfig,
    ProjectorConfig,
)
from physiofm.objectives.augment import AugmentConfig, add_noise_at_snr, scale_amplitude
from physiofm.objectives.physiosync import (
    PhysioSyncObjectiveConfig,
    cross_modal_consistency_loss,
    cross_modal_head,
    draw_subject_groups,
    nt_xent_logits,
    nt_xent_loss,
    pool_subject_groups,
    temporal_contrastive_logits,
    temporal_contrastive_loss,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(shared_path("fixtures", "physiosync", f"{name}.npy")))


def _fixture_head() -> torch.nn.Module:
    head = cross_modal_head(12, 6)
    with torch.no_grad():
        head[0].weight.copy_(_fixture("cmcon_W"))
        head[0].bias.copy_(_fixture("cmcon_b"))
    return head


# ---------------------------------------------------------------- parity with the official code


def test_losses_match_official_fixtures():
    eeg, gsr = _fixture("proj_eeg"), _fixture("proj_gsr")
    enc_eeg, enc_gsr = _fixture("enc_eeg"), _fixture("enc_gsr")
    dependent = [temporal_contrastive_loss(eeg), temporal_contrastive_loss(gsr),
                 cross_modal_consistency_loss(enc_eeg, enc_gsr, _fixture_head(), 0.1)]
    cross = [nt_xent_loss(eeg), nt_xent_loss(gsr),
             cross_modal_consistency_loss(enc_eeg, enc_gsr, _fixture_head(), 0.07, variant="cross")]
    got = []
    for tcl_eeg, tcl_gsr, cmca in (dependent, cross):
        got += [tcl_eeg, tcl_gsr, cmca, 0.5 * tcl_eeg + 0.5 * tcl_gsr + cmca]
    np.testing.assert_allclose(torch.stack(got).detach().double().numpy(), _fixture("losses").numpy(), rtol=1e-5)


def test_logits_match_official_fixtures():
    eeg = _fixture("proj_eeg")
    from_a, _ = temporal_contrastive_logits(eeg, 0.1)
    np.testing.assert_allclose(from_a[:, :4].numpy(), _fixture("dep_tcl_logits_ab_eeg").numpy(), rtol=1e-5)

    # upstream orders each row as [negatives in column order..., positive]
    logits, n = nt_xent_logits(eeg, 0.07), 8
    reordered = torch.stack([
        logits[i, [j for j in range(n) if j not in (i, (i + 4) % n)] + [(i + 4) % n]] for i in range(n)
    ])
    np.testing.assert_allclose(reordered.numpy(), _fixture("cross_tcl_logits_eeg").numpy(), rtol=1e-5)


# ---------------------------------------------------------------- independent float64 reference


def _unit(p):
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _cross_entropy(logits, target):
    m = logits.max()
    return -(logits[target] - m - np.log(np.sum(np.exp(logits - m))))


def reference_temporal(p, tau):
    a, b = np.split(_unit(p), 2)
    total = 0.0
    for anchor, other in ((a, b), (b, a)):
        n = len(anchor)
        for i in range(n):
            same = [anchor[i] @ anchor[j] for j in range(n) if j != i]
            logits = np.array([anchor[i] @ other[j] for j in range(n)] + same) / tau
            total += _cross_entropy(logits, i) / n
    return total


def reference_nt_xent(p, tau):
    u, n = _unit(p), len(p)
    total = 0.0
    for i in range(n):
        others = [j for j in range(n) if j != i]
        logits = np.array([u[i] @ u[j] for j in others]) / tau
        total += _cross_entropy(logits, others.index((i + n // 2) % n))
    return total / n


def reference_cross_modal(e_eeg, e_gsr, weight, bias, tau, loss):
    def head(e):
        y = e @ weight.T + bias
        return (y - y.mean(0)) / np.sqrt(y.var(0) + 1e-5)  # BatchNorm1d, train mode, fresh

    eeg, gsr = head(e_eeg), head(e_gsr)
    half = len(eeg) // 2
    return 0.5 * loss(np.vstack([gsr[:half], eeg[half:]]), tau) + 0.5 * loss(np.vstack([eeg[:half], gsr[half:]]), tau)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.1), (10, 24, 0.1), (6, 64, 0.07), (16, 5, 0.5)])
def test_matches_float64_reference_at_other_shapes(n, d, tau):
    rng = np.random.default_rng(n * 10 + d)
    p = rng.standard_normal((n, d))
    assert temporal_contrastive_loss(torch.from_numpy(p), tau).item() == pytest.approx(reference_temporal(p, tau), rel=1e-10)
    assert nt_xent_loss(torch.from_numpy(p), tau).item() == pytest.approx(reference_nt_xent(p, tau), rel=1e-10)
    # float32 as in training
    assert temporal_contrastive_loss(torch.from_numpy(p).float(), tau).item() == pytest.approx(
        reference_temporal(p, tau), rel=1e-5)

    e_eeg, e_gsr = rng.standard_normal((n, 2 * d)), rng.standard_normal((n, 2 * d))
    head = cross_modal_head(2 * d, d + 3).double()
    weight, bias = head[0].weight.detach().numpy(), head[0].bias.detach().numpy()
    for variant, loss in (("dependent", reference_temporal), ("cross", reference_nt_xent)):
        got = cross_modal_consistency_loss(torch.from_numpy(e_eeg), torch.from_numpy(e_gsr), head, tau, variant)
        expected = reference_cross_modal(e_eeg, e_gsr, weight, bias, tau, loss)
        assert got.item() == pytest.approx(expected, rel=1e-9)


def test_loss_arguments_are_validated():
    with pytest.raises(ValueError, match=r"even N >= 2.*got \(5, 4\)"):
        temporal_contrastive_loss(torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"variant must be one of \('dependent', 'cross'\), got 'both'"):
        cross_modal_consistency_loss(torch.randn(4, 6), torch.randn(4, 6), cross_modal_head(6, 3), 0.1, "both")
    with pytest.raises(ValueError, match="same shape"):
        cross_modal_consistency_loss(torch.randn(4, 6), torch.randn(6, 6), cross_modal_head(6, 3), 0.1)


# ---------------------------------------------------------------- subject groups


def test_subject_groups_are_disjoint_halves_and_seeded():
    group_a, group_b = draw_subject_groups(9, torch.Generator().manual_seed(0))
    assert len(group_a) == 4 and len(group_b) == 5
    assert sorted(group_a.tolist() + group_b.tolist()) == list(range(9))
    again = draw_subject_groups(9, torch.Generator().manual_seed(0))
    assert torch.equal(group_a, again[0]) and torch.equal(group_b, again[1])
    with pytest.raises(ValueError, match="at least 2 subjects.*got 1"):
        draw_subject_groups(1)
    small_a, small_b = draw_subject_groups(32, torch.Generator().manual_seed(0), group_size=3)
    assert len(small_a) == len(small_b) == 3 and not set(small_a.tolist()) & set(small_b.tolist())
    with pytest.raises(ValueError, match=r"group_size must lie in \[1, 4\] for 9 subjects, got 5"):
        draw_subject_groups(9, group_size=5)


def test_group_pooling_takes_the_maximum_over_each_group():
    embeddings = torch.randn(3, 5, 4)
    pooled = pool_subject_groups(embeddings, torch.tensor([0, 3]), torch.tensor([1, 2, 4]))
    assert pooled.shape == (6, 4)
    assert torch.equal(pooled[:3], torch.maximum(embeddings[:, 0], embeddings[:, 3]))
    assert torch.equal(pooled[3:], embeddings[:, [1, 2, 4]].max(dim=1).values)
    with pytest.raises(ValueError, match=r"disjoint, both hold \[3\]"):
        pool_subject_groups(embeddings, torch.tensor([0, 3]), torch.tensor([3, 4]))
    with pytest.raises(ValueError, match=r"group_b must be .* in \[0, 5\), got \[5\]"):
        pool_subject_groups(embeddings, torch.tensor([0]), torch.tensor([5]))


# ---------------------------------------------------------------- augmentation


def test_amplitude_scaling_is_one_factor_per_window_within_range():
    x = torch.randn(6, 3, 2, 50)
    before = x.clone()
    scaled = scale_amplitude(x, 0.8, 1.2, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    factors = scaled / x
    assert torch.allclose(factors, factors[..., :1, :1].expand_as(factors))
    assert factors.min() >= 0.8 and factors.max() <= 1.2 and factors.std() > 0.01
    with pytest.raises(ValueError, match=r"0 < low <= high, got \(1.5, 1.2\)"):
        scale_amplitude(x, 1.5, 1.2)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_has_the_requested_snr(snr_db):
    t = torch.linspace(0, 20, 20_000, dtype=torch.float64)
    x = torch.stack([torch.sin(2 * np.pi * t), 3 * torch.cos(5 * t)])  # two series of different power
    noisy = add_noise_at_snr(x, snr_db, torch.Generator().manual_seed(1))
    measured = 10 * torch.log10(x.pow(2).mean(-1) / (noisy - x).pow(2).mean(-1))
    np.testing.assert_allclose(measured.numpy(), snr_db, atol=0.1)


def test_augmentation_is_reproducible_from_the_generator():
    x = torch.randn(2, 3, 4, 10)
    config = AugmentConfig()
    first = config.apply(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, config.apply(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, config.apply(x, torch.Generator().manual_seed(8)))
    assert AugmentConfig(enabled=False).apply(x) is x


# ---------------------------------------------------------------- networks


def test_published_window_sizes():
    long_eeg = PhysioSyncEncoderConfig.for_window("long", n_channels=32, eeg=True)
    short_gsr = PhysioSyncEncoderConfig.for_window("short", n_channels=1, eeg=False)
    assert (long_eeg.n_samples, long_eeg.dim, long_eeg.n_prompts, long_eeg.out_dim) == (640, 640, 2, 2560)
    assert (short_gsr.n_samples, short_gsr.dim, short_gsr.n_prompts, short_gsr.out_dim) == (128, 128, 0, 512)
    with pytest.raises(ValueError, match=r"resolution must be one of \('long', 'short'\), got 'medium'"):
        PhysioSyncEncoderConfig.for_window("medium", n_channels=32, eeg=True)


def test_encoder_and_projector_shapes():
    config = PhysioSyncEncoderConfig(n_channels=4, n_samples=32, dim=16, n_prompts=2)
    encoder = config.build()
    features = encoder(torch.randn(5, 4, 32))
    assert features.shape == (5, config.out_dim) == (5, 64)
    assert all(block.prompts.shape == (1, 2, 16) for block in encoder.blocks)
    assert all(block.prompts is None for block in PhysioSyncEncoderConfig(n_channels=1, n_samples=32, dim=16).build().blocks)
    projector = ProjectorConfig(hidden=(32, 48), out_dim=24).build(config.out_dim)
    assert projector(features).shape == (5, 24)
    with pytest.raises(ValueError, match=r"\(batch, 4, 32\) windows, got \(5, 4, 31\)"):
        encoder(torch.randn(5, 4, 31))
    with pytest.raises(ValueError, match=r"dim \(18\) must be divisible by heads \(4\)"):
        PhysioSyncEncoderConfig(dim=18).build()


def test_gated_fusion_scales_each_feature_by_its_gate_confidence():
    config = GatedFusionConfig(long_dim=8, short_dim=4, n_slices=5, n_classes=4)
    fusion = config.build().eval()
    gen = torch.Generator().manual_seed(0)
    e_long, g_long = torch.randn(3, 8, generator=gen), torch.randn(3, 8, generator=gen)
    e_short, g_short = torch.randn(3, 5, 4, generator=gen), torch.randn(3, 5, 4, generator=gen)
    assert fusion(e_long, e_short, g_long, g_short).shape == (3, 4)
    seen = []
    fusion.mlp.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():  # uniform gates: every feature scaled by 1/4
        for gate in (fusion.gate_long, fusion.gate_short):
            gate.weight.zero_()
            gate.bias.zero_()
        fusion(e_long, e_short, g_long, g_short)
    expected = torch.cat([e_long, e_short.flatten(1), g_long, g_short.flatten(1)], dim=1) / 4
    assert torch.allclose(seen[0], expected)
    with pytest.raises(ValueError, match=r"eeg_short must have shape \(batch, 5, 4\), got \(3, 4, 4\)"):
        fusion(e_long, e_short[:, :4], g_long, g_short)


# ---------------------------------------------------------------- objective


def _small_config(**overrides) -> PhysioSyncObjectiveConfig:
    small = dict(
        eeg=PhysioSyncEncoderConfig(n_channels=4, n_samples=32, dim=16, n_prompts=2),
        peripheral=PhysioSyncEncoderConfig(n_channels=1, n_samples=32, dim=16),
        projector=ProjectorConfig(hidden=(32,), out_dim=16), head_dim=32,
    )
    return PhysioSyncObjectiveConfig(**{**small, **overrides})


@pytest.mark.parametrize("variant", ["dependent", "cross"])
def test_objective_can_be_optimised(variant):
    torch.manual_seed(0)
    objective = _small_config(variant=variant, seed=1).build()
    gen = torch.Generator().manual_seed(2)
    batch = {"eeg": torch.randn(8, 4, 4, 32, generator=gen), "peripheral": torch.randn(8, 4, 1, 32, generator=gen)}
    before = {k: v.clone() for k, v in batch.items()}
    optimiser = torch.optim.Adam(objective.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        loss, metrics = objective(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append([loss.item()] + [metrics[k].item() for k in ("loss_tcl_eeg", "loss_tcl_peripheral", "loss_cross_modal")])
    assert all(torch.equal(batch[k], before[k]) for k in batch)  # augmentation works on copies
    first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
    assert np.all(last < first), (first, last)
    assert last[0] < 0.6 * first[0]
    encoders = objective.encoders()
    assert set(encoders) == {"eeg", "peripheral"}
    assert encoders["eeg"](batch["eeg"][:, 0]).shape == (8, 64)


def test_objective_encodes_only_the_drawn_subjects():
    objective = _small_config(subjects_per_group=2).build()
    encoded = []
    objective.eeg_encoder.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
    batch = {"eeg": torch.randn(3, 10, 4, 32), "peripheral": torch.randn(3, 10, 1, 32)}
    loss, _ = objective(batch)
    assert encoded == [3 * 4] and torch.isfinite(loss)


def test_objective_rejects_bad_batches_and_configs():
    objective = _small_config().build()
    eeg, peripheral = torch.randn(4, 3, 4, 32), torch.randn(4, 3, 1, 32)
    with pytest.raises(ValueError, match=r"same segments and subjects, got \(4, 3, 4, 32\) and \(4, 2, 1, 32\)"):
        objective({"eeg": eeg, "peripheral": peripheral[:, :2]})
    with pytest.raises(ValueError, match="at least 2 segments per batch, got 1"):
        objective({"eeg": eeg[:1], "peripheral": peripheral[:1]})
    with pytest.raises(ValueError, match="at least 2 subjects per segment to form two groups, got 1"):
        objective({"eeg": eeg[:, :1], "peripheral": peripheral[:, :1]})
    with pytest.raises(ValueError, match="one size for the shared CM-CA head, got 64 and 128"):
        _small_config(peripheral=PhysioSyncEncoderConfig(n_channels=1, n_samples=32, dim=32)).build()
    with pytest.raises(ValueError, match="variant must be one of"):
        _small_config(variant="independent").build()
    assert objective.tau == 0.1 and _small_config(variant="cross").build().tau == 0.07


def test_group_and_augmentation_draws_resume_from_the_state_dict():
    gen = torch.Generator().manual_seed(3)
    batch = {"eeg": torch.randn(4, 5, 4, 32, generator=gen), "peripheral": torch.randn(4, 5, 1, 32, generator=gen)}
    running = _small_config(seed=5).build()
    running(batch)  # advance the draws
    resumed, restarted = _small_config(seed=6).build(), _small_config(seed=6).build()
    resumed.load_state_dict(running.state_dict())
    restarted.load_state_dict(running.state_dict())
    restarted.generator.manual_seed(5)  # same weights, draws from the start of the stream
    losses = []
    for objective in (running, resumed, restarted):
        torch.manual_seed(0)  # dropout draws from the global generator
        losses.append(objective(batch)[0].item())
    assert losses[0] == losses[1] != losses[2]
