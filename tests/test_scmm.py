"""SCMM: parity with the official losses (fixtures), an independent float64 reference at other
shapes, hybrid masking that leaves the originals intact, the networks, and the objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import shared_path
from physiofm.encoders.scmm import SCMMClassifierConfig, SCMMConfig, SCMMEncoderConfig
from physiofm.objectives.scmm import (
    SCMMObjectiveConfig,
    UncertaintyWeighting,
    aggregate,
    hybrid_mask,
    reconstruction_loss,
    soft_assignment,
    soft_contrastive_loss,
)

# (alpha, sharpness, tau) of the three fixture rows, named after the upstream config files
FIXTURE_ROWS = {"seed_iv": (0.5, 0.05, 0.5), "seed": (0.75, 0.5, 0.5), "seed_deap": (0.5, 0.2, 0.05)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fixture(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(shared_path("fixtures", "scmm", f"{name}.npy")))


def assert_relative(got: torch.Tensor, expected, rtol: float = 1e-5, terms=None) -> None:
    """Each entry within rtol of the reference; entries a million times below its largest need not be.

    `terms`: for a float32 product A @ B, the magnitudes |A| @ |B| of the terms each entry sums. An entry
    where they cancel carries the rounding of the terms, not of itself (a few float32 ulps of |A| @ |B|,
    which differ between CPU kernels: AVX2 and AVX-512 sum in different orders)."""
    expected = np.asarray(expected, dtype=np.float64)
    floor = 1e-6 * np.abs(expected).max()
    got = got.detach().double().numpy()
    if terms is None:
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * floor)
        return
    a, b = (t.detach().double().abs().numpy() for t in terms)
    bound = rtol * np.abs(expected) + rtol * floor + a.shape[-1] * np.finfo(np.float32).eps * (a @ b)
    excess = np.abs(got - expected) - bound
    assert (excess <= 0).all(), (f"{(excess > 0).sum()} entries outside rtol={rtol} and the float32 rounding of "
                                 f"their terms; worst at {np.unravel_index(excess.argmax(), excess.shape)}: "
                                 f"{got.flat[excess.argmax()]!r} vs {expected.flat[excess.argmax()]!r}")


# ---------------------------------------------------------------- parity with the official code


@pytest.mark.parametrize("row", FIXTURE_ROWS)
def test_losses_match_official_fixtures(row):
    alpha, sharpness, tau = FIXTURE_ROWS[row]
    x_in, z, h, recon = _fixture("x_in"), _fixture("z"), _fixture("h"), _fixture("recon")

    assert_relative(soft_assignment(x_in, alpha, sharpness), _fixture(f"{row}_soft_assign"))
    weights, h_agg = aggregate(z, h, tau)
    assert weights.shape == (8, 8) and h_agg.shape == (8, 12)
    assert_relative(weights, _fixture(f"{row}_agg_weights"))
    assert_relative(h_agg, _fixture(f"{row}_agg_emb"), terms=(weights, h.reshape(8, -1)))
    assert_relative(z @ z.T, _fixture(f"{row}_sim"), terms=(z, z.T))

    loss_c = soft_contrastive_loss(x_in, z, alpha, sharpness, tau)
    loss_r = reconstruction_loss(x_in, recon)
    total = UncertaintyWeighting(2)(loss_c, loss_r)
    assert_relative(torch.stack([loss_c, loss_r, total]), _fixture(f"{row}_losses"))


def test_aliased_upstream_batch_reproduces_its_losses():
    """Upstream's in-place masking feeds [x_masked; x_masked]; the same formulas give its numbers."""
    x_in, z, recon = _fixture("aliased_x_in"), _fixture("z"), _fixture("recon")
    alpha, sharpness, tau = FIXTURE_ROWS["seed_iv"]
    loss_c = soft_contrastive_loss(x_in, z, alpha, sharpness, tau)
    loss_r = reconstruction_loss(x_in, recon)
    assert_relative(torch.stack([loss_c, loss_r, UncertaintyWeighting(2)(loss_c, loss_r)]),
                    _fixture("aliased_seed_iv_losses"))
    # and they differ from the intact batch's: the defect changes the training signal
    intact = soft_contrastive_loss(_fixture("x_in"), z, alpha, sharpness, tau)
    assert abs(intact.item() - loss_c.item()) > 1e-4


# ---------------------------------------------------------------- independent float64 reference


def reference_losses(x, z, h, alpha, sharpness, tau):
    """The published formulas in plain float64 numpy, row by row."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    dist = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = -flat[i] @ flat[j] / (np.linalg.norm(flat[i]) * np.linalg.norm(flat[j]))
    off_diagonal = [dist[i, j] for i in range(n) for j in range(n) if i != j]
    np.fill_diagonal(dist, min(off_diagonal))
    scaled = (dist - dist.min(axis=0)) / (dist.max(axis=0) - dist.min(axis=0))
    soft = 2 * alpha / (1 + np.exp(scaled / sharpness))

    sim = z @ z.T
    total = 0.0
    for i in range(n):
        pos = (i + n // 2) % n
        negatives = [j for j in range(n) if j not in (i, pos)]
        logits = np.array([sim[i, pos]] + [sim[i, j] for j in negatives]) / tau
        log_probs = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
        weights = np.array([1.0] + [soft[i, j] for j in negatives])
        total -= np.sum(weights * log_probs)
    loss_c = total / (n * (n - 1))

    scores = sim / tau
    agg = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        e = np.exp(scores[i, others] - scores[i, others].max())
        agg[i, others] = e / e.sum()
    return soft, loss_c, agg, agg @ h.reshape(n, -1)


@pytest.mark.parametrize("b,c,f,d,alpha,sharpness,tau", [
    (3, 62, 5, 8, 0.5, 0.05, 0.5),
    (5, 32, 5, 40, 0.75, 0.5, 0.5),
    (7, 9, 4, 24, 0.5, 0.2, 0.05),
    (2, 1, 3, 5, 0.3, 0.1, 1.0),
])
def test_matches_float64_reference_at_other_shapes(b, c, f, d, alpha, sharpness, tau):
    rng = np.random.default_rng(b * 100 + c)
    x = rng.random((2 * b, c, f))
    z = rng.standard_normal((2 * b, d))
    h = rng.standard_normal((2 * b, 6, 2))
    soft, loss_c, agg, h_agg = reference_losses(x, z, h, alpha, sharpness, tau)

    x64, z64, h64 = map(torch.from_numpy, (x, z, h))
    np.testing.assert_allclose(soft_assignment(x64, alpha, sharpness).numpy(), soft, rtol=1e-9)
    assert soft_contrastive_loss(x64, z64, alpha, sharpness, tau).item() == pytest.approx(loss_c, rel=1e-10)
    weights, mixed = aggregate(z64, h64, tau)
    np.testing.assert_allclose(weights.numpy(), agg, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(mixed.numpy(), h_agg, rtol=1e-9, atol=1e-12)

    # float32, as training runs: the loss stays within 1e-5 of the float64 reference
    x32, z32 = x64.float(), z64.float()
    assert soft_contrastive_loss(x32, z32, alpha, sharpness, tau).item() == pytest.approx(loss_c, rel=1e-5)


def test_gradients_flow_to_embeddings_and_features():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 4, 5, generator=gen, dtype=torch.float64)
    z = torch.randn(6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    h = torch.randn(6, 3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: soft_contrastive_loss(x, z, 0.5, 0.2, 0.5), (z,))
    assert torch.autograd.gradcheck(lambda z, h: aggregate(z, h, 0.5)[1], (z, h))
    # the soft weights are fixed targets computed from the inputs
    x_grad = x.clone().requires_grad_(True)
    assert not soft_assignment(x_grad, 0.5, 0.2).requires_grad


def test_uncertainty_weighting_value_and_gradient():
    weighting = UncertaintyWeighting(2)
    losses = torch.tensor([1.5, 0.25])
    total = weighting(*losses)
    assert total.item() == pytest.approx(0.5 * 1.75 + 2 * np.log(2))
    total.backward()
    # d/dσ [L/(2σ²) + log(1+σ²)] at σ=1 is 1 - L
    np.testing.assert_allclose(weighting.sigma.grad.numpy(), [1 - 1.5, 1 - 0.25], rtol=1e-6)
    with pytest.raises(ValueError, match="holds 2 weights, got 3"):
        weighting(*losses, losses[0])


# ---------------------------------------------------------------- hybrid masking


def test_hybrid_mask_leaves_the_originals_intact():
    x = torch.rand(16, 62, 5) + 0.1  # no zeros, so every masked entry is visible
    before = x.clone()
    masked, keep = hybrid_mask(x, 0.5, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # upstream zeroes these in place
    assert masked.data_ptr() != x.data_ptr()
    assert torch.equal(masked, torch.where(keep, x, torch.zeros(())))
    assert (masked == 0).sum() == (~keep).sum() > 0


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("threshold", [0.0, 0.1, 1.0])
def test_masked_fraction_follows_the_ratio(ratio, threshold):
    _, keep = hybrid_mask(torch.ones(400, 62, 5), ratio, threshold, torch.Generator().manual_seed(1))
    assert 1 - keep.float().mean().item() == pytest.approx(ratio, abs=0.01)


def test_threshold_chooses_between_channel_and_element_masking():
    gen = torch.Generator().manual_seed(2)
    _, channel_only = hybrid_mask(torch.ones(50, 62, 5), 0.5, 1.0, gen)
    assert torch.equal(channel_only.all(-1), channel_only.any(-1))  # whole channels kept or dropped
    _, elements = hybrid_mask(torch.ones(50, 62, 5), 0.5, 0.0, gen)
    mixed = elements.any(-1) & ~elements.all(-1)
    assert mixed.float().mean() > 0.8  # most channels keep some bands and drop others
    # threshold 0.1: about 10 % of the channels are channel-masked (all-or-nothing)
    _, hybrid = hybrid_mask(torch.ones(400, 62, 5), 0.5, 0.1, gen)
    uniform_rows = (hybrid.all(-1) | ~hybrid.any(-1)).float().mean().item()
    # element rows are uniform with probability 2·0.5⁵ = 1/16
    assert uniform_rows == pytest.approx(0.1 + 0.9 / 16, abs=0.01)


def test_hybrid_mask_is_seeded_and_rejects_bad_arguments():
    x = torch.rand(4, 6, 5)
    first = hybrid_mask(x, generator=torch.Generator().manual_seed(5))[1]
    again = hybrid_mask(x, generator=torch.Generator().manual_seed(5))[1]
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match=r"mask ratio must lie in \[0, 1\), got 1.0"):
        hybrid_mask(x, ratio=1.0)
    with pytest.raises(ValueError, match="threshold must lie in"):
        hybrid_mask(x, threshold=-0.5)
    with pytest.raises(ValueError, match=r"got \(4, 30\)"):
        hybrid_mask(x.reshape(4, 30))


# ---------------------------------------------------------------- networks


@pytest.mark.parametrize("channels", [62, 32])
def test_networks_shapes(channels):
    config = SCMMConfig(SCMMEncoderConfig(n_channels=channels))
    assert config.encoder.feature_dim == 384  # (B, 128, 3) as published
    model = config.build()
    h, z = model(torch.rand(4, channels, 5))
    assert h.shape == (4, 384) and z.shape == (4, 128)
    assert model.decoder(h).shape == (4, channels * 5)
    logits = SCMMClassifierConfig(feature_dim=384, n_classes=2).build()(h)
    assert logits.shape == (4, 2)
    with pytest.raises(ValueError, match=rf"\(batch, {channels}, 5\).*got \(4, 7, 5\)"):
        model.encoder(torch.rand(4, 7, 5))


def test_encoder_feature_dim_follows_band_count():
    for bands in (3, 5, 9, 16):
        config = SCMMEncoderConfig(n_channels=4, n_bands=bands, width=16)
        assert config.build()(torch.rand(2, 4, bands)).shape == (2, config.feature_dim)


# ---------------------------------------------------------------- objective


def test_published_settings_and_unknown_pair():
    config = SCMMObjectiveConfig.for_transfer("seed", "deap")
    assert (config.alpha, config.sharpness, config.tau) == (0.5, 0.2, 0.05)
    config = SCMMObjectiveConfig.for_transfer("SEED-IV", "SEED", seed=9)
    assert (config.alpha, config.sharpness, config.tau, config.seed) == (0.5, 0.05, 0.5, 9)
    with pytest.raises(ValueError, match="deap->seed_iv; allowed: seed_iv->seed"):
        SCMMObjectiveConfig.for_transfer("deap", "seed_iv")


def test_objective_keeps_batch_intact_and_can_be_optimised():
    torch.manual_seed(0)
    model = SCMMConfig(SCMMEncoderConfig(n_channels=32, width=32), projector_hidden=64, projector_dim=32)
    objective = SCMMObjectiveConfig(model=model, seed=3).build()
    x = torch.rand(16, 32, 5, generator=torch.Generator().manual_seed(4))
    batch = {"x": x.clone()}
    optimiser = torch.optim.Adam(objective.parameters(), lr=5e-3)
    history = []
    for _ in range(40):
        loss, metrics = objective(batch)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append([loss.item(), metrics["loss_contrastive"].item(), metrics["loss_reconstruction"].item()])
    assert torch.equal(batch["x"], x)
    assert 0.4 < metrics["masked_fraction"].item() < 0.6
    assert set(metrics) >= {"loss_contrastive", "loss_reconstruction", "sigma_contrastive", "sigma_reconstruction"}
    first, last = np.mean(history[:5], axis=0), np.mean(history[-5:], axis=0)
    assert last[0] < first[0] and last[1] < first[1] and last[2] < 0.5 * first[2]
    encoder = objective.encoders()["encoder"]
    assert encoder(x).shape == (16, model.encoder.feature_dim)


def test_resumed_objective_draws_the_same_masks(tmp_path):
    """The masking generator's state is part of the state_dict, which loads with weights_only=True."""
    model = SCMMConfig(SCMMEncoderConfig(n_channels=6, width=16), projector_hidden=16, projector_dim=8)
    running = SCMMObjectiveConfig(model=model, seed=11).build()
    batch = {"x": torch.rand(4, 6, 5)}
    for _ in range(3):
        running(batch)
    torch.save(running.state_dict(), tmp_path / "objective.pt")

    resumed = SCMMObjectiveConfig(model=model, seed=0).build()
    resumed.load_state_dict(torch.load(tmp_path / "objective.pt", weights_only=True))
    loss, metrics = running(batch)
    loss_resumed, metrics_resumed = resumed(batch)
    assert metrics["masked_fraction"] == metrics_resumed["masked_fraction"]
    assert loss.item() == loss_resumed.item()
