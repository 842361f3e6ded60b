"""SCMM and PhysioSync method configs without a cluster: published settings, named errors, what
comes from the corpus, the fitted scaling on the workers, slices for the short encoders, exports."""
from __future__ import annotations

import pytest
import torch

from physiofm.encoders.physiosync import PhysioSyncEncoder
from physiofm.encoders.scmm import FeatureScaling, FeatureScalingConfig, SCMMEncoder
from physiofm.platform.config import ConfigError, TrainConfig
from physiofm.platform.export import export_encoders, load_encoder
from tests.conftest import run_job_main

SMALL_SCMM = {"name": "scmm", "model": {"encoder": {"width": 16}, "projector_hidden": 16, "projector_dim": 8}}
SMALL_SYNC = {"name": "physiosync", "long_dim": 16, "short_dim": 8, "depth": 1, "heads": 2,
              "projector": {"hidden": [16], "out_dim": 8}, "head_dim": 8}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(method: dict, **data) -> TrainConfig:
    return TrainConfig.from_dict({"method": method, "data": {"corpus": "somewhere", **data}})


@pytest.mark.parametrize("source,target,expected,preset", [
    ("seed_iv", "seed", (0.5, 0.05, 0.5), "scmm-de"),
    ("deap", "seed", (0.5, 0.05, 0.5), "scmm-de-deap32"),
    ("seed", "seed_iv", (0.75, 0.5, 0.5), "scmm-de"),
    ("seed", "deap", (0.5, 0.2, 0.05), "scmm-de-deap32"),
])
def test_scmm_pair_gives_the_published_setting_and_the_channel_set(source, target, expected, preset):
    method = config({"name": "scmm", "source": source, "target": target}).method
    assert method.soft_weights() == expected and method.default_preset == preset
    given = config({"name": "scmm", "source": source, "target": target, "tau": 0.3}).method
    assert given.soft_weights() == (*expected[:2], 0.3)


@pytest.mark.parametrize("method,message", [
    ({"name": "scmm", "source": "seed4"}, r"method.source must be one of \['seed', 'seed_iv', 'deap'\], got 'seed4'"),
    ({"name": "scmm", "source": "seed_iv", "target": "deap"},
     r"no published SCMM setting for seed_iv->deap \(published: seed_iv->seed, .*\); give method.alpha"),
    ({"name": "scmm", "source": "deap", "target": "seed", "tau": 0.0}, r"method.tau must be > 0, got 0.0"),
    ({"name": "scmm", "mask_ratio": 1.0}, r"method.mask_ratio must be in \[0, 1\), got 1.0"),
    ({"name": "physiosync", "resolution": "medium"},
     r"method.resolution must be one of \['long', 'short', 'both'\], got 'medium'"),
    ({"name": "physiosync", "variant": "simclr"}, r"method.variant must be one of \['dependent', 'cross'\]"),
    ({"name": "physiosync", "dataset": "amigos"}, r"method.dataset must be one of \['', 'deap', 'dreamer'\]"),
    ({"name": "physiosync", "long_dim": 30, "heads": 4}, r"method.long_dim=30 must be divisible by method.heads=4"),
    ({"name": "physiosync", "projector": {"width": 3}}, r"unknown config key method.projector.width"),
    ({"name": "physiosync", "subjects_per_group": 0}, r"method.subjects_per_group must be >= 1 or null"),
    ({"name": "physiosync", "augment": {"scale_low": 1.5}}, r"0 < scale_low <= scale_high, got \(1.5, 1.2\)"),
])
def test_bad_method_values_are_named(method, message):
    with pytest.raises(ConfigError, match=message):
        config(method)


def test_physiosync_holds_out_whole_trials_by_default():
    assert config({"name": "physiosync"}).data.validation_by == ("dataset", "session", "trial")
    assert config({"name": "scmm"}).data.validation_by == ("recording",)
    assert config({"name": "physiosync"}, validation_by=["subject"]).data.validation_by == ("subject",)


def test_scmm_takes_the_channel_count_from_the_corpus_and_refuses_unaligned_ones():
    cfg = config({**SMALL_SCMM, "source": "seed", "target": "deap"})
    with pytest.raises(ConfigError, match=r"SCMM seed->deap needs DE windows of 32 channels \(preset "
                                          r"'scmm-de-deap32'\); the corpus has 62"):
        cfg.method.check_corpus({"x": (62, 5)})
    with pytest.raises(ConfigError, match=r"needs a corpus column 'x' of DE features"):
        cfg.method.check_corpus({"eeg": (32, 640)})
    cfg.method.check_corpus({"x": (32, 5)})
    assert cfg.method.model.encoder.n_channels == 32
    with pytest.raises(ConfigError, match=r"fitted on the training side by prepare_datasets"):
        cfg.method.build()
    cfg.method.feature_min, cfg.method.feature_max = (0.0,) * 160, (2.0,) * 160
    on_worker = TrainConfig.from_dict(cfg.to_dict()).method  # what the workers rebuild
    assert on_worker.model.encoder.n_channels == 32 and on_worker.feature_max == (2.0,) * 160
    objective = on_worker.build(seed=1)
    assert objective.model.encoder.config.n_channels == 32
    assert torch.allclose(objective.scaling(torch.full((3, 32, 5), 1.0)), torch.full((3, 32, 5), 0.5))


def test_feature_scaling_follows_min_max_and_keeps_constant_features(tmp_path):
    scaling = FeatureScalingConfig(minimum=(0.0, -2.0, 1.0, 3.0), maximum=(4.0, 2.0, 1.0, 5.0)).build()
    x = torch.tensor([[[2.0, 0.0], [1.0, 5.0]], [[4.0, 2.0], [1.0, 3.0]]])
    assert torch.allclose(scaling(x), torch.tensor([[[0.5, 0.5], [0.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]]))
    assert scaling.state_dict() == {}  # the fit lives in the config, which the export keeps
    with pytest.raises(ValueError, match=r"fitted on 4 features per sample, got input of shape \(1, 3, 2\)"):
        scaling(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"maximum is below minimum at features \[1\]"):
        FeatureScalingConfig(minimum=(0.0, 1.0), maximum=(1.0, 0.0)).build()


def test_scmm_exports_rebuild_from_their_stored_config(tmp_path):
    cfg = config({**SMALL_SCMM, "source": "seed", "target": "seed_iv"})
    cfg.method.check_corpus({"x": (62, 5)})
    cfg.method.feature_min, cfg.method.feature_max = tuple(range(310)), tuple(range(1, 311))
    objective = cfg.method.build().eval()
    written = export_encoders(objective, tmp_path)
    assert sorted(written) == ["encoder", "feature_scaling"]
    x = torch.rand(4, 62, 5) + torch.arange(310.0).view(62, 5)
    scaling, encoder = load_encoder(written["feature_scaling"]), load_encoder(written["encoder"])
    assert isinstance(scaling, FeatureScaling) and isinstance(encoder, SCMMEncoder)
    assert torch.equal(scaling(x), objective.scaling(x))
    assert torch.allclose(encoder.eval()(scaling(x)), objective.model.encoder(objective.scaling(x)))


def test_physiosync_shapes_come_from_the_corpus_and_the_dataset_layout_is_checked():
    cfg = config({**SMALL_SYNC, "dataset": "dreamer"})
    with pytest.raises(ConfigError, match=r"method.dataset='dreamer' means 14 EEG and 2 peripheral channels; "
                                          r"the corpus has 32 and 1"):
        cfg.method.check_corpus({"eeg": (32, 640), "peripheral": (1, 640)})
    with pytest.raises(ConfigError, match=r"windows of 642 samples do not cut into method.short_slices=5"):
        cfg.method.check_corpus({"eeg": (14, 642), "peripheral": (2, 642)})
    with pytest.raises(ConfigError, match=r"columns 'eeg' and 'peripheral'"):
        cfg.method.check_corpus({"x": (14, 5)})
    with pytest.raises(ConfigError, match=r"they come from the corpus"):
        cfg.method.build()
    cfg.method.check_corpus({"eeg": (14, 640), "peripheral": (2, 640)})
    encoders = TrainConfig.from_dict(cfg.to_dict()).method.build().encoders()
    shapes = {name: (e.config.n_channels, e.config.n_samples, e.config.dim, e.config.n_prompts)
              for name, e in encoders.items()}
    assert shapes == {"eeg_long": (14, 640, 16, 2), "peripheral_long": (2, 640, 16, 0),
                      "eeg_short": (14, 128, 8, 2), "peripheral_short": (2, 128, 8, 0)}


def test_short_encoders_beside_long_ones_get_one_aligned_slice_of_each_segment():
    cfg = config(SMALL_SYNC)
    cfg.method.check_corpus({"eeg": (3, 640), "peripheral": (1, 640)})
    objective = cfg.method.build()
    time = torch.arange(640.0)
    batch = {"eeg": time.expand(6, 4, 3, 640).clone(), "peripheral": 2 * time.expand(6, 4, 1, 640).clone()}
    objective.reseed(5)
    sliced = objective._slices(batch, 128)
    assert sliced["eeg"].shape == (6, 4, 3, 128) and sliced["peripheral"].shape == (6, 4, 1, 128)
    starts = sliced["eeg"][:, 0, 0, 0]
    assert set((starts % 128).tolist()) == {0.0}  # whole 1-s slices ...
    assert torch.equal(sliced["eeg"], starts.view(6, 1, 1, 1) + torch.arange(128.0).expand(6, 4, 3, 128))
    assert torch.equal(sliced["peripheral"][:, :, 0], 2 * sliced["eeg"][:, :, 0])  # ... the same one per modality
    objective.reseed(5)
    assert torch.equal(objective._slices(batch, 128)["eeg"], sliced["eeg"])
    assert objective._slices(batch, 640) is batch
    with pytest.raises(ValueError, match=r"segments of 640 samples cannot feed encoders of 300 samples"):
        objective._slices(batch, 300)


def test_both_resolutions_sum_their_losses_and_train():
    cfg = config({**SMALL_SYNC, "augment": {"enabled": False}})
    cfg.method.check_corpus({"eeg": (3, 640), "peripheral": (1, 640)})
    objective = cfg.method.build(seed=2)
    batch = {"eeg": torch.randn(4, 4, 3, 640), "peripheral": torch.randn(4, 4, 1, 640)}
    objective.reseed(9)
    loss, metrics = objective(batch)
    assert torch.isclose(loss, metrics["loss_long"] + metrics["loss_short"])
    assert {"loss_tcl_eeg_long", "loss_cross_modal_short"} <= set(metrics)
    loss.backward()
    for name, encoder in objective.encoders().items():
        assert all(p.grad is not None for p in encoder.embed.parameters()), name


def test_physiosync_exports_rebuild_from_their_stored_config(tmp_path):
    cfg = config({**SMALL_SYNC, "resolution": "short"})
    cfg.method.check_corpus({"eeg": (3, 640), "peripheral": (1, 640)})
    objective = cfg.method.build().eval()
    written = export_encoders(objective, tmp_path)
    assert sorted(written) == ["eeg_short", "peripheral_short"]
    encoder = load_encoder(written["eeg_short"])
    assert isinstance(encoder, PhysioSyncEncoder) and encoder.config.n_samples == 128
    x = torch.randn(2, 3, 128)
    assert torch.allclose(encoder.eval()(x), objective.encoders()["eeg_short"](x))


def test_exports_naming_foreign_classes_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "physiofm.module.v1", "class": "os.system", "config_class": "os.path", "config": {},
                "state_dict": {}}, path)
    with pytest.raises(ValueError, match="only physiofm classes are rebuilt"):
        load_encoder(path)


@pytest.mark.parametrize("job,flags,message", [
    ("pretrain_scmm.py", ["--source", "seed_iv", "--target", "deap"], "no published SCMM setting for seed_iv->deap"),
    ("pretrain_scmm.py", ["--source", "deap", "--target", "seed", "--tau", "-1"], "method.tau must be > 0, got -1.0"),
    ("pretrain_scmm.py", ["--source", "seed4"], "argument --source: invalid choice: 'seed4'"),
    ("pretrain_physiosync.py", ["--resolution", "medium"], "argument --resolution: invalid choice: 'medium'"),
    ("pretrain_physiosync.py", ["--dataset", "dreamer", "--zero-stage", "4"], "run.zero_stage must be one of"),
])
def test_jobs_reject_bad_flags_before_writing_anything(tmp_path, monkeypatch, capsys, job, flags, message):
    monkeypatch.setenv("PHYSIOFM_CACHE", str(tmp_path / "cache"))
    code, out, err = run_job_main(job, ["--output", str(tmp_path / "runs"), *flags], capsys)
    assert code == 2, out + err
    assert message in err
    assert not any(tmp_path.iterdir())  # no demo corpus, no run folder
