"""Encoder actor of the embedding job: pooling, and zero-filled absent leads left out."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from physiofm.encoders import CBraMod
from physiofm.platform.embed import EmbedConfig, EncoderActor


@pytest.fixture(scope="module")
def actor_and_encoder(tmp_path_factory):
    torch.manual_seed(1)
    encoder = CBraMod(n_layer=1).eval()
    path = encoder.save_pretrained(tmp_path_factory.mktemp("enc") / "encoder.pt")
    return EncoderActor(path.read_bytes(), "mean", use_gpu=False), encoder


def test_absent_leads_do_not_change_the_embedding(actor_and_encoder):
    actor, encoder = actor_and_encoder
    x = np.random.default_rng(0).standard_normal((2, 12, 3, 200)).astype(np.float32)
    present = np.zeros((2, 12), dtype=bool)
    present[:, :2] = True  # a 2-lead Holter record zero-filled to 12 leads
    x[:, 2:] = 0.0
    first = actor({"x": x.copy(), "channel_mask": present, "subject": np.array(["a", "b"])})
    noisy = x.copy()
    noisy[:, 2:] = 50.0  # whatever sits in absent leads must not matter
    second = actor({"x": noisy, "channel_mask": present, "subject": np.array(["a", "b"])})
    np.testing.assert_allclose(first["embedding"], second["embedding"], rtol=1e-5, atol=1e-6)
    assert list(first["subject"]) == ["a", "b"] and "x" not in first
    with torch.no_grad():
        mask = torch.zeros(2, 12, 3, dtype=torch.bool)
        mask[:, 2:] = True
        features = encoder.encode(torch.from_numpy(x), mask)[:, :2]
    np.testing.assert_allclose(first["embedding"], features.mean((1, 2)).numpy(), rtol=1e-4, atol=1e-5)


def test_all_present_is_the_encoders_mean_embedding(actor_and_encoder):
    actor, encoder = actor_and_encoder
    x = np.random.default_rng(1).standard_normal((3, 4, 2, 200)).astype(np.float32)
    out = actor({"x": x.copy(), "channel_mask": np.ones((3, 4), dtype=bool)})
    with torch.no_grad():
        np.testing.assert_allclose(out["embedding"], encoder.embed(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="pooling must be 'mean' or 'flatten'"):
        EmbedConfig(corpus="c", encoder="e", output="o", pooling="max").validate()
    with pytest.raises(ValueError, match="actors must be >= 1"):
        EmbedConfig(corpus="c", encoder="e", output="o", actors=0).validate()
