"""Export files hold only their own tensors, for every method, even when the trained parameters are
views of one flat buffer (as DeepSpeed's ZeRO keeps them)."""
from __future__ import annotations

import pytest
import torch

from physiofm.platform.config import TrainConfig
from physiofm.platform.export import export_encoders, load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL_CBRAMOD = {"encoder": {"n_layer": 1, "dim_feedforward": 64}}
METHODS = {
    "masked_reconstruction": ({"name": "masked_reconstruction", "modality": "ecg", **SMALL_CBRAMOD},
                              {"x": (12, 10, 200)}),
    "scmm": ({"name": "scmm", "source": "seed", "target": "seed_iv",
              "model": {"encoder": {"width": 16}, "projector_hidden": 16, "projector_dim": 8}}, {"x": (62, 5)}),
    "physiosync": ({"name": "physiosync", "long_dim": 16, "short_dim": 8, "depth": 1, "heads": 2,
                    "projector": {"hidden": [16], "out_dim": 8}, "head_dim": 8},
                   {"eeg": (32, 640), "peripheral": (1, 640)}),
}


def objective_of(method: dict, shapes: dict):
    cfg = TrainConfig.from_dict({"method": method, "data": {"corpus": "somewhere"}})
    cfg.method.check_corpus(shapes)
    if method["name"] == "scmm":  # fitted on the training side in a real run
        cfg.method.feature_min, cfg.method.feature_max = tuple(range(310)), tuple(range(1, 311))
    return cfg.method.build()


def flatten_like_zero(module: torch.nn.Module) -> int:
    """Make every parameter a view of one flat buffer, as ZeRO does (with room after them, as its
    padding and other modules' parameters take); returns the buffer's bytes."""
    params = list(module.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params] + [torch.zeros(2**20)])
    offset = 0
    for p in params:
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    return flat.numel() * flat.element_size()


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * 4 for t in module.state_dict().values())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_export_file_is_about_its_own_parameter_bytes(method, tmp_path):
    objective = objective_of(*METHODS[method])
    expected = {name: encoder.state_dict() for name, encoder in objective.encoders().items()}
    flat_bytes = flatten_like_zero(objective)
    written = export_encoders(objective, tmp_path)
    for name, path in written.items():
        own = tensor_bytes(objective.encoders()[name])
        size = path.stat().st_size
        # pickled names and the config add a few KiB; the flat buffer would add everything else
        assert size <= 1.2 * own + 32 * 1024, (name, size, own, flat_bytes)
        rebuilt = load_encoder(path).state_dict()
        for key, tensor in expected[name].items():
            assert torch.equal(rebuilt[key], tensor.float() if tensor.is_floating_point() else tensor), (name, key)
