"""Fine-tuning end to end on the session's Ray: DEAP- and DREAMER-layout corpora with the planted
effect, read by the real readers, prepared by the real pipeline, folds in parallel as Ray tasks.

- subject-dependent (by trial) and LOSO score clearly above chance; with shuffled labels, at chance;
- EEG ⊕ ECG concatenation beats each modality alone when each carries its own part of the label;
- a frozen encoder comes out bit-unchanged; the same seed gives the same metrics bit for bit;
- the job writes metrics.json, report.md, the split, confusion matrices and curves.
One prepared corpus per layout is shared by every run (cached by recipe).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from physiofm.data import synthetic
from physiofm.encoders import CBraMod
from physiofm.platform.finetune import FinetuneConfig, prepare_protocol, run_protocol
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

FAST = {"epochs": 8, "batch_size": 16, "save_models": False}


@pytest.fixture(scope="module")
def corpora(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    synthetic.write_deap(root / "deap", subjects=(1, 2, 3, 4), n_trials=8, stimulus_s=16.0, seed=1)
    synthetic.write_dreamer(root / "dreamer", n_subjects=4, n_trials=8, stimulus_s=16.0, seed=2)
    # valence only in the EEG (alpha asymmetry), arousal only in the ECG (heart rate)
    split_effect = synthetic.PlantedEffect(alpha_asymmetry=1.0, beta_power=0.0, gsr_level=0.0, heart_rate=1.0,
                                           trial_noise=0.0)
    synthetic.write_dreamer(root / "fusion", n_subjects=4, n_trials=16, stimulus_s=16.0, seed=3, effect=split_effect)
    return {"root": root, "address": ray_local.get_runtime_context().gcs_address, "cache": str(root / "prepared")}


def run(corpora, dataset: str, folder: str, **fields):
    config = FinetuneConfig(dataset=dataset, root=str(corpora["root"] / folder), prepared_cache=corpora["cache"],
                            **{**FAST, **fields})
    return run_protocol(config, log=lambda line: None)


@pytest.fixture(scope="module")
def outcomes(corpora):
    """Every protocol run, once: {(dataset, protocol, shuffled): ProtocolResult}."""
    out = {}
    for dataset, folder, modalities in (("deap", "deap", ("eeg", "peripheral")), ("dreamer", "dreamer", ("eeg", "ecg"))):
        for protocol in ("subject-dependent", "loso"):
            for shuffled in (False, True):
                out[dataset, protocol, shuffled] = run(corpora, dataset, folder, protocol=protocol, folds=3,
                                                       label="arousal", modalities=modalities,
                                                       shuffle_labels=shuffled)
    return out


@pytest.mark.parametrize("dataset", ["deap", "dreamer"])
@pytest.mark.parametrize("protocol", ["subject-dependent", "loso"])
def test_planted_effect_is_learned_above_chance_and_shuffled_labels_score_at_chance(outcomes, dataset, protocol):
    real, shuffled = outcomes[dataset, protocol, False].document, outcomes[dataset, protocol, True].document
    print(f"{dataset} {protocol}: real {real['mean']}, shuffled {shuffled['mean']}, chance {real['chance']}")
    assert real["mean"]["balanced_accuracy"] >= 0.7 and real["mean"]["kappa"] >= 0.35, real["mean"]
    assert real["mean"]["auroc"] >= 0.75
    assert abs(shuffled["mean"]["balanced_accuracy"] - 0.5) <= 0.15, shuffled["mean"]
    assert abs(shuffled["mean"]["kappa"]) <= 0.3 and shuffled["shuffled_labels"]
    assert real["chance"]["balanced_accuracy"] == 0.5
    assert len(real["folds"]) == (3 if protocol == "subject-dependent" else 4)
    unit = "trial" if protocol == "subject-dependent" else "subject"
    for fold in real["split"]["folds"]:
        assert fold["unit"] == unit and not set(fold["test"]) & (set(fold["train"]) | set(fold["validation"]))


def test_same_seed_gives_the_same_metrics_bit_for_bit(corpora, outcomes):
    first = outcomes["deap", "subject-dependent", False]
    again = run(corpora, "deap", "deap", protocol="subject-dependent", folds=3, label="arousal",
                modalities=("eeg", "peripheral"))
    assert [f["metrics"] for f in again.document["folds"]] == [f["metrics"] for f in first.document["folds"]]
    for a, b in zip(first.folds, again.folds):
        np.testing.assert_array_equal(a["test_prob"], b["test_prob"])
    assert again.document["split"] == first.document["split"]
    other = prepare_protocol(FinetuneConfig(dataset="deap", root=str(corpora["root"] / "deap"), folds=3,
                                            label="arousal", modalities=("eeg", "peripheral"), seed=1,
                                            prepared_cache=corpora["cache"]), log=lambda line: None)
    assert [f.to_dict() for f in other.folds] != first.document["split"]["folds"]  # another seed, another split


def test_eeg_and_ecg_together_beat_each_alone_when_each_carries_its_own_signal(corpora):
    scores = {}
    for name, modalities in (("eeg+ecg", ("eeg", "ecg")), ("eeg", ("eeg",)), ("ecg", ("ecg",))):
        result = run(corpora, "dreamer", "fusion", protocol="subject-dependent", folds=3, label="quadrant",
                     modalities=modalities, epochs=30)
        scores[name] = result.document["mean"]["balanced_accuracy"]
    print("quadrant balanced accuracy:", scores)  # chance 0.25; each modality alone knows half the label
    assert scores["eeg+ecg"] >= max(scores["eeg"], scores["ecg"]) + 0.06, scores
    assert scores["eeg+ecg"] >= 0.45 and min(scores["eeg"], scores["ecg"]) > 0.3


def test_frozen_encoder_is_bit_unchanged_and_the_job_writes_its_report(corpora, tmp_path):
    export = CBraMod(n_layer=1, dim_feedforward=64).save_pretrained(tmp_path / "eeg" / "encoder.pt")
    output = tmp_path / "out"
    env = {**os.environ, "PHYSIOFM_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "jobs/finetune_emotion.py", "--dataset", "dreamer", "--root", str(corpora["root"] / "dreamer"),
         "--protocol", "loso", "--label", "valence", "--encoder", "cbramod", "--init", str(export),
         "--modalities", "eeg", "--freeze", "--epochs", "3", "--output", str(output), "--address", corpora["address"],
         "--prepared-cache", corpora["cache"]],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| DREAMER | leave-one-subject-out | valence (low, high) | cbramod (physiofm export) for eeg; frozen" \
        in proc.stdout
    metrics = json.loads((output / "metrics.json").read_text())
    assert {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1", "kappa", "auroc"} <= set(metrics["mean"])
    assert len(metrics["folds"]) == 4 and metrics["split"]["unit"] == "subject"
    assert all(f["frozen_encoders_unchanged"] for f in metrics["folds"])
    assert metrics["encoders"]["eeg"]["sha256"] and metrics["split_seed"] == 0
    report = (output / "report.md").read_text()
    assert "| DREAMER | leave-one-subject-out |" in report and "split seed 0" in report and str(export) in report
    for name in ["training_curves.png", *[f"confusion_fold_{i:02d}.png" for i in range(1, 5)]]:
        assert (output / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert json.loads((output / "split.json").read_text()) == metrics["split"]
    official = CBraMod.from_pretrained(export).state_dict()
    for i in range(1, 5):
        saved = torch.load(output / "folds" / f"fold_{i:02d}" / "model.pt", weights_only=True)["state_dict"]
        for name, tensor in official.items():
            assert torch.equal(saved[f"encoders.eeg.{name}"], tensor), name
