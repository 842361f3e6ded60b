"""CBraMod parity with the official model (fixtures) and with an independent reference elsewhere."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from physiofm.encoders import CBraMod, CBraModConfig
from physiofm.encoders.cbramod import config_from_state_dict
from tests.cbramod_reference import reference_forward
from tests.conftest import shared_path

TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def official():
    weights = shared_path("fixtures", "cbramod", "cbramod_random_init_seed0_state_dict.pth")
    state = torch.load(weights, weights_only=True)
    model = CBraMod()
    model.load_state_dict(state, strict=True)
    return model.eval(), state, weights


def fixture(name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(shared_path("fixtures", "cbramod", f"{name}.npy")))


def test_default_config_is_the_official_layout():
    model = CBraMod()
    keys = [line.split("\t") for line in shared_path("fixtures", "cbramod", "keys.txt").read_text().splitlines()]
    state = model.state_dict()
    assert [k for k, *_ in keys] == list(state)
    for name, shape, dtype in keys:
        assert tuple(state[name].shape) == eval(shape), name
        assert str(state[name].dtype) == f"torch.{dtype}", name
    assert sum(p.numel() for p in model.parameters()) == 4_924_000
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4_923_800
    assert sum(p.numel() for p in model.proj_out.parameters()) == 40_200


@pytest.mark.parametrize("suffix", ["", "_scale0p2"])
def test_parity_with_official_outputs(official, suffix):
    model, _, _ = official
    x = fixture(f"input{suffix}")
    with torch.no_grad():
        torch.testing.assert_close(model.patch_embedding(x), fixture(f"patch_embedding{suffix}"), **TOL)
        torch.testing.assert_close(model.encode(x), fixture(f"backbone_features{suffix}"), **TOL)
        torch.testing.assert_close(model(x), fixture(f"output{suffix}"), **TOL)


def test_parity_masked_forward(official):
    model, _, _ = official
    with torch.no_grad():
        out = model(fixture("input"), mask=fixture("mask"))
    torch.testing.assert_close(out, fixture("output_masked"), **TOL)
    assert not torch.allclose(out, fixture("output"), atol=1e-2)


def test_from_pretrained_reads_the_official_file(official):
    model, _, weights = official
    loaded = CBraMod.from_pretrained(weights).eval()
    assert loaded.config == CBraModConfig()
    x = fixture("input_scale0p2")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), fixture("output_scale0p2"), **TOL)


@pytest.mark.parametrize("channels,patches", [(12, 10), (1, 1), (3, 33), (62, 2)])
def test_other_shapes_match_the_independent_reference(official, channels, patches):
    model, state, _ = official
    gen = torch.Generator().manual_seed(channels * 100 + patches)
    x = 0.5 * torch.randn(2, channels, patches, 200, generator=gen)
    mask = torch.rand(2, channels, patches, generator=gen) < 0.4
    with torch.no_grad():
        for m in (None, mask):
            emb, feats, out = reference_forward(state, x, m)
            torch.testing.assert_close(model.patch_embedding(x, m).double(), emb, **TOL)
            torch.testing.assert_close(model.encode(x, m).double(), feats, **TOL)
            torch.testing.assert_close(model(x, m).double(), out, **TOL)


def test_other_weights_and_sizes_match_the_independent_reference(tmp_path):
    torch.manual_seed(7)
    cfg = CBraModConfig(n_layer=3, d_model=64, nhead=4, dim_feedforward=96, out_dim=200)
    model = CBraMod(cfg).eval()
    with torch.no_grad():  # perturb every tensor so no init-time structure (zeros, ones) hides a bug
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = model.save_pretrained(tmp_path / "enc.pt")
    loaded = CBraMod.from_pretrained(path).eval()
    assert loaded.config == cfg
    x = torch.randn(3, 5, 7, 200)
    with torch.no_grad():
        _, feats, out = reference_forward(loaded.state_dict(), x, nhead=4)
        torch.testing.assert_close(loaded(x).double(), out, **TOL)
        torch.testing.assert_close(loaded.encode(x).double(), feats, **TOL)


def test_config_is_inferred_from_a_bare_state_dict(official):
    _, state, _ = official
    assert config_from_state_dict(state) == CBraModConfig()


def test_other_patch_sizes_build_and_train():
    model = CBraMod(patch_size=128, out_dim=128, n_layer=2)
    x = torch.randn(2, 4, 3, 128)
    out = model(x)
    assert out.shape == (2, 4, 3, 128)
    out.pow(2).mean().backward()
    assert model.patch_embedding.time_proj.weight.grad is not None


def test_pooled_embeddings(official):
    model, _, _ = official
    x = fixture("input")
    with torch.no_grad():
        feats = model.encode(x)
        torch.testing.assert_close(model.embed(x), feats.mean(dim=(1, 2)))
        assert model.embed(x, "flatten").shape == (2, 19 * 4 * 200)
    with pytest.raises(ValueError, match="pooling must be 'mean' or 'flatten'"):
        model.embed(x, "max")


def test_bad_inputs_are_named():
    model = CBraMod(n_layer=1)
    with pytest.raises(ValueError, match="patches of 200 samples"):
        model(torch.randn(1, 2, 3, 100))
    with pytest.raises(ValueError, match=r"mask must have shape \(B, C, N\)"):
        model(torch.randn(1, 2, 3, 200), mask=torch.zeros(1, 2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="nhead"):
        CBraModConfig(nhead=3)
    with pytest.raises(ValueError, match="CBraModConfig.n_layer"):
        CBraModConfig(n_layer=0)


def test_from_pretrained_rejects_foreign_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="neither an official CBraMod state_dict"):
        CBraMod.from_pretrained(path)
