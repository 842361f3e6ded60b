"""Fine-tuning parts without a cluster: metrics against scikit-learn, the spectral encoder, the heads,
the aligned windows, the planted effect, request checks that fail before anything starts, and one
fold trained by the one loop (bit-for-bit repeatable, frozen encoders untouched)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, f1_score, roc_auc_score

from physiofm.data import get_preset, read_trials, synthetic
from physiofm.encoders import CBraMod
from physiofm.encoders.embedders import PhysioSyncEmbedder
from physiofm.encoders.fusion import FusionHeadConfig, GatedFusionHead, LateFusionClassifier
from physiofm.encoders.physiosync import GatedFusionConfig, PhysioSyncEncoderConfig
from physiofm.encoders.spectral import SpectralEncoder, SpectralEncoderConfig
from physiofm.evaluation import chance_metrics, classification_metrics
from physiofm.platform.config import ConfigError
from physiofm.platform.finetune import FinetuneConfig, plan


def test_metrics_are_scikit_learn_s_and_chance_is_the_majority_answer():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    prob = np.clip(0.5 + 0.3 * (2 * y - 1) + 0.3 * rng.standard_normal(50), 0, 1)
    prob = np.stack([1 - prob, prob], axis=1)
    scores = classification_metrics(y, prob, 2)
    pred = prob.argmax(1)
    assert scores["balanced_accuracy"] == balanced_accuracy_score(y, pred)
    assert scores["kappa"] == cohen_kappa_score(y, pred)
    assert scores["macro_f1"] == f1_score(y, pred, average="macro")
    assert scores["auroc"] == roc_auc_score(y, prob[:, 1])
    chance = chance_metrics(np.array([0, 0, 0, 1]), 2)
    assert chance == {"accuracy": 0.75, "balanced_accuracy": 0.5, "macro_f1": pytest.approx(3 / 7),
                      "weighted_f1": pytest.approx(0.75 * 6 / 7), "kappa": 0.0, "auroc": 0.5}
    assert np.isnan(classification_metrics([0, 1, 2], np.eye(3), 3)["auroc"])  # AUROC: binary labels only


def test_spectral_encoder_resolves_heart_rate_and_eeg_bands(one_torch_thread):
    t = torch.arange(800) / 200.0  # one 4-s window at 200 Hz
    x = torch.zeros(1, 3, 4, 200)
    x[0, 0] = torch.sin(2 * torch.pi * 10.0 * t).reshape(4, 200)  # alpha
    x[0, 1] = torch.sin(2 * torch.pi * 1.25 * t).reshape(4, 200)  # 75 bpm
    x[0, 2] = 5.0 + 0.01 * torch.randn(800).reshape(4, 200)  # a skin-conductance level
    encoder = SpectralEncoder(SpectralEncoderConfig(n_channels=3))
    power = encoder.band_power(x)[0]
    edges = encoder.config.band_edges
    assert edges[int(power[0].argmax())] == 8.0 and edges[int(power[1].argmax())] == 1.25
    assert int(power[2].argmax()) == 0  # the 0-0.5 Hz bin holds the level
    assert encoder.embed(x.repeat(4, 1, 1, 1)).shape == (4, 3 * (len(edges) - 1))


def test_late_and_gated_heads_train_only_what_is_not_frozen(one_torch_thread):
    eeg, ecg = SpectralEncoder(SpectralEncoderConfig(n_channels=4)), SpectralEncoder(SpectralEncoderConfig(n_channels=2))
    late = LateFusionClassifier({"eeg": eeg, "ecg": ecg}, FusionHeadConfig(num_classes=3, freeze_encoders=False))
    inputs = {"eeg": torch.randn(6, 4, 2, 200), "ecg": torch.randn(6, 2, 2, 200)}
    loss, logits = late.training_loss(inputs, torch.tensor([0, 1, 2, 0, 1, 2]), 0.1)
    late.eval()
    members = torch.stack([m.softmax(-1) for m in late.member_logits(inputs)]).mean(0)
    torch.testing.assert_close(late(inputs).exp(), members)  # prediction: mean of the modalities' probabilities
    loss.backward()
    assert eeg.norm.weight.grad is not None and late.heads["ecg"][0].weight.grad is not None

    def physiosync(channels: int, resolution: str, eeg: bool):
        config = PhysioSyncEncoderConfig.for_window(resolution, channels, eeg=eeg, dim=8, depth=1, heads=2)
        return config.build()

    embedders = {m: PhysioSyncEmbedder(physiosync(c, "long", m == "eeg"), physiosync(c, "short", m == "eeg"))
                 for m, c in (("eeg", 3), ("peripheral", 1))}
    classifier = GatedFusionConfig(long_dim=32, short_dim=32, n_slices=5, n_classes=2).build()
    gated = GatedFusionHead(embedders, classifier, freeze=True)
    out = gated({"eeg": torch.randn(4, 3, 640), "peripheral": torch.randn(4, 1, 640)})
    assert out.shape == (4, 2)
    out.sum().backward()
    assert all(p.grad is None for p in gated.encoders.parameters())
    assert classifier.gate_long.weight.grad is not None


def test_aligned_windows_hold_the_same_seconds_of_every_modality(tmp_path):
    rec = read_trials(str(synthetic.write_dreamer(tmp_path, n_subjects=1, n_trials=1, stimulus_s=13.0)))[0]
    windows = get_preset("emotion", modalities=("eeg", "ecg"), window_s=4.0)(rec)
    assert windows.tensors["eeg"].shape == (3, 14, 4, 200) and windows.tensors["ecg"].shape == (3, 2, 4, 200)
    assert windows.index.tolist() == [0, 1, 2] and windows.start_s.tolist() == [0.0, 4.0, 8.0]
    alone = get_preset("emotion", modalities=("ecg",), window_s=4.0)(rec)
    np.testing.assert_array_equal(alone.tensors["ecg"], windows.tensors["ecg"])
    assert abs(windows.tensors["ecg"].std() - 0.2) < 0.05  # DREAMER's unitless ECG standardised to ~0.2 mV
    assert np.abs(windows.tensors["eeg"]).max() < 1.0  # Emotiv's 4200 µV offset gone, no edge transient
    description = get_preset("emotion", modalities=("eeg", "ecg")).to_dict()
    assert [b["column"] for b in description["windows"]["branches"]] == ["eeg", "ecg"]
    assert description["windows"]["branches"][0]["steps"][1]["step"] == "MNEResampleFilter"


def test_planted_effect_shows_valence_in_frontal_alpha_asymmetry_and_arousal_in_skin_conductance(tmp_path):
    (path,) = synthetic.write_deap(tmp_path, subjects=(1,), n_trials=8, stimulus_s=8.0)
    trials = read_trials(str(path))
    preset = get_preset("emotion", modalities=("eeg", "peripheral"), window_s=8.0)
    names = [n.upper() for n in trials[0].ch_names[:32]]
    asymmetry, level = [], []
    for rec in trials:
        w = preset(rec)
        power = np.abs(np.fft.rfft(w.tensors["eeg"][0].reshape(32, -1), axis=1)) ** 2
        alpha = np.log(power[:, 8 * 8:13 * 8].mean(axis=1))  # 8-13 Hz at 1/8 Hz resolution
        asymmetry.append(np.mean([alpha[names.index(r)] - alpha[names.index(l)] for l, r in
                                  (("F3", "F4"), ("F7", "F8"), ("AF3", "AF4"), ("FP1", "FP2"))]))
        level.append(w.tensors["peripheral"][0, 0].mean())  # GSR, µS
    valence = [r.labels["valence"] for r in trials]
    arousal = [r.labels["arousal"] for r in trials]
    assert np.corrcoef(valence, asymmetry)[0, 1] > 0.7
    assert np.corrcoef(arousal, level)[0, 1] > 0.3
    silent = synthetic.write_deap(tmp_path / "none", subjects=(1,), n_trials=1, stimulus_s=8.0,
                                  effect=synthetic.NO_EFFECT)[0]
    baseline = synthetic.write_deap(tmp_path / "plain", subjects=(1,), n_trials=1, stimulus_s=8.0)[0]
    assert silent.read_bytes() != baseline.read_bytes()  # the effect is what differs


def test_bad_requests_fail_at_planning_naming_the_value_and_what_is_allowed(tmp_path):
    def refused(match: str, **fields):
        with pytest.raises(ConfigError, match=match):
            plan(FinetuneConfig(**fields))

    refused(r"--label: label 'quadrant' is not defined for seed; allowed labels for seed: \['emotion'",
            dataset="seed", label="quadrant")
    refused(r"--protocol 'k-fold' is not allowed; allowed: \['subject-dependent', 'loso'", protocol="k-fold")
    synthetic.write_deap(tmp_path / "deap", subjects=(1, 2), n_trials=2, stimulus_s=4.0)
    refused(r"--protocol loso needs >= 3 subjects .* holds 2: \['01', '02'\]", dataset="deap",
            root=str(tmp_path / "deap"), protocol="loso")
    refused(r"--protocol cross-subject needs >= 6 subjects .* --folds 5", dataset="deap", root=str(tmp_path / "deap"),
            protocol="cross-subject")
    refused(r"--encoder scmm reads DE features of SEED, SEED-IV or DEAP; not 'dreamer'", encoder="scmm", init="x.pt")
    refused(r"--encoder physiosync fits datasets \['deap', 'dreamer'\] .*, not 'seed'", dataset="seed",
            encoder="physiosync", init=str(tmp_path))
    refused(r"--head gated is PhysioSync's fusion", head="gated")
    refused(r"--modalities: deap has no 'ecg' signals; its modalities: \['eeg', 'peripheral'\]", dataset="deap",
            modalities=("ecg",))

    # an ECG export (its run record says so) offered as the EEG encoder, and the other way round
    export = tmp_path / "ecg-run" / "step_00000010" / "export" / "encoder.pt"
    CBraMod(n_layer=1).save_pretrained(export)
    (tmp_path / "ecg-run" / "physiofm-run.yaml").write_text(yaml.safe_dump(
        {"config": {"method": {"name": "masked_reconstruction", "modality": "ecg"}, "data": {"corpus": "ptbxl"}}}))
    refused(r"was pretrained on ecg windows; --encoder cbramod encodes eeg: use --encoder ecg", encoder="cbramod",
            init=str(export), modalities=("eeg",))
    checked = plan(FinetuneConfig(encoder="eeg=spectral,ecg=ecg", init=f"ecg={export}"))
    assert checked.provenance["ecg"]["pretraining"] == "masked_reconstruction"
    official = tmp_path / "pretrained_weights.pth"
    torch.save(CBraMod(n_layer=1).state_dict(), official)
    refused(r"was pretrained on eeg windows; --encoder ecg encodes ecg", encoder="ecg", init=str(official))
    refused(r"is not a weights file that torch.load\(weights_only=True\) reads", encoder="cbramod",
            init=str(tmp_path / "ecg-run" / "physiofm-run.yaml"), modalities=("eeg",))

    # an SCMM export of SEED's 62 channels for DEAP (32)
    from physiofm.encoders.scmm import SCMMEncoder, SCMMEncoderConfig
    from physiofm.platform.export import export_encoders

    class Holder(torch.nn.Module):
        def encoders(self):
            return {"encoder": SCMMEncoder(SCMMEncoderConfig(n_channels=62, width=8))}

    export_encoders(Holder(), tmp_path / "scmm")
    refused(r"SCMM encoder of 62 channels; it fits datasets \['seed', 'seediv'\] .* not 'deap'", dataset="deap",
            encoder="scmm", init=str(tmp_path / "scmm" / "encoder.pt"))


def fold_task(method_config, n_windows: int, epochs: int = 4):
    from physiofm.platform.config import DataConfig, OptimConfig, RunConfig, TrainConfig

    cfg = TrainConfig(method=method_config, data=DataConfig(batch_size=8), optim=OptimConfig(lr=3e-3, min_lr=0.0),
                      run=RunConfig(seed=3))
    order = np.arange(n_windows)
    return {"train_config": cfg.to_dict(), "epochs": epochs,
            "fold": {"name": "fold", "index": 0, "train": order[:24], "validation": order[24:32], "test": order[32:]}}


def test_one_fold_repeats_bit_for_bit_and_leaves_frozen_encoders_untouched(one_torch_thread, tmp_path):
    from physiofm.platform.fold import fit_fold
    from physiofm.platform.methods import SupervisedMethodConfig

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    eeg = rng.standard_normal((40, 3, 2, 200)).astype(np.float32)
    eeg[:, 0] *= (1 + y)[:, None, None]  # a class effect the head can find
    arrays = {"eeg": eeg, "y": y}
    method = SupervisedMethodConfig(encoders={"eeg": "spectral"}, shapes={"eeg": (3, 2, 200)})
    first, second = (fit_fold(fold_task(method, 40), arrays) for _ in range(2))
    np.testing.assert_array_equal(first["test_prob"], second["test_prob"])
    assert first["curve"] == second["curve"] and len(first["curve"]) == 4
    assert 1 <= first["best_epoch"] <= 4

    encoder = CBraMod(n_layer=1, dim_feedforward=32)
    weights = encoder.save_pretrained(tmp_path / "encoder.pt").read_bytes()
    frozen = SupervisedMethodConfig(encoders={"eeg": "cbramod"}, shapes={"eeg": (3, 2, 200)}, freeze=True)
    result = fit_fold(fold_task(frozen, 40, epochs=2), arrays, {"eeg": {"encoder": weights}})
    assert result["frozen_unchanged"] is True
    saved = torch.load(io.BytesIO(result["model"]), weights_only=True)["state_dict"]
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(saved[f"encoders.eeg.{name}"], tensor), name


def test_scmm_and_physiosync_exports_fine_tune_through_their_heads(one_torch_thread, tmp_path):
    """SCMM's CNN + classifier (min-max fitted on the fold's training windows), and PhysioSync's
    long/short encoders under the gated head, from exports written as their jobs write them."""
    from physiofm.encoders.physiosync import PhysioSyncEncoder
    from physiofm.encoders.scmm import SCMMEncoder, SCMMEncoderConfig
    from physiofm.platform.downstream import inspect_init
    from physiofm.platform.export import export_encoders
    from physiofm.platform.fold import fit_fold
    from physiofm.platform.methods import SupervisedMethodConfig

    class Holder(torch.nn.Module):
        def __init__(self, parts):
            super().__init__()
            self.parts = parts

        def encoders(self):
            return self.parts

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    export_encoders(Holder({"encoder": SCMMEncoder(SCMMEncoderConfig(n_channels=32, width=8))}), tmp_path / "scmm")
    weights, provenance = inspect_init("scmm", "eeg", "deap", str(tmp_path / "scmm" / "encoder.pt"))
    assert provenance["source"] == "SCMM export (32 channels)"
    de = (rng.standard_normal((40, 32, 5)) + y[:, None, None]).astype(np.float32)
    method = SupervisedMethodConfig(encoders={"eeg": "scmm"}, head="scmm", inputs={"eeg": "x"}, shapes={"eeg": (32, 5)})
    result = fit_fold(fold_task(method, 40, epochs=2), {"x": de, "y": y}, {"eeg": weights})
    assert result["test_prob"].shape == (8, 2)

    def encoder(channels: int, resolution: str, eeg: bool):
        return PhysioSyncEncoder(PhysioSyncEncoderConfig.for_window(resolution, channels, eeg=eeg, dim=8, depth=1,
                                                                    heads=2))

    parts = {f"{m}_{r}": encoder(c, r, m == "eeg") for m, c in (("eeg", 14), ("peripheral", 2)) for r in ("long", "short")}
    export_encoders(Holder(parts), tmp_path / "physiosync")
    files = {m: inspect_init("physiosync", m, "dreamer", str(tmp_path / "physiosync"))[0] for m in ("eeg", "ecg")}
    assert set(files["eeg"]) == {"long", "short"}
    with pytest.raises(ConfigError, match=r"a PhysioSync eeg encoder of 14 channels x 640 samples; deap eeg windows "
                                          r"are 32 x 640"):
        inspect_init("physiosync", "eeg", "deap", str(tmp_path / "physiosync"))
    gated = SupervisedMethodConfig(encoders={"eeg": "physiosync", "ecg": "physiosync"}, head="gated", freeze=True,
                                   inputs={"eeg": "eeg", "ecg": "peripheral"},
                                   shapes={"eeg": (14, 640), "ecg": (2, 640)})
    arrays = {"eeg": rng.standard_normal((40, 14, 640)).astype(np.float32),
              "peripheral": rng.standard_normal((40, 2, 640)).astype(np.float32), "y": y}
    result = fit_fold(fold_task(gated, 40, epochs=2), arrays, files)
    assert result["test_prob"].shape == (8, 2) and result["frozen_unchanged"] is True
