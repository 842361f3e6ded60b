"""Encoders for fine-tuning: which families exist, which modality and window each one takes, what
an export must look like to fit a dataset, and how the fold workers rebuild it from its bytes.

    spectral    log band power + batch norm of any patch column (no pretraining; the default)
    cbramod     CBraMod EEG encoder: the official `pretrained_weights.pth` or a physiofm export
    ecg         the symmetric ECG encoder (CBraMod class) from `jobs/pretrain_ecg.py`
    scmm        SCMM's CNN on DE features, from `jobs/pretrain_scmm.py` (export/encoder.pt)
    physiosync  PhysioSync's long (and short) encoders, from `jobs/pretrain_physiosync.py` (the
                export folder holding eeg_long.pt, peripheral_long.pt, eeg_short.pt, ...)

Checks run on the driver, on the export's header only, before any worker starts.
"""
from __future__ import annotations

import hashlib
import io
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from physiofm.platform.config import ConfigError

#: channels per modality of each dataset's native layout (peripheral: GSR, PPG, respiration, temperature)
DATASET_MODALITIES: dict[str, dict[str, int]] = {
    "deap": {"eeg": 32, "peripheral": 4}, "dreamer": {"eeg": 14, "ecg": 2},
    "amigos": {"eeg": 14, "ecg": 2, "peripheral": 1}, "seed": {"eeg": 62}, "seediv": {"eeg": 62},
}
PHYSIOSYNC_PERIPHERAL = {"deap": ("peripheral", 1), "dreamer": ("ecg", 2)}  # GSR; the two ECG leads


@dataclass(frozen=True)
class Family:
    name: str
    form: str  # "patches" (C, N, 200), "de" (C, 5) over 1 s, "samples" (C, 640) over 5 s at 128 Hz
    modalities: tuple[str, ...]
    needs_init: bool
    description: str


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("spectral", "patches", ("eeg", "ecg", "peripheral"), False,
           "log band power + batch norm per channel (no pretraining; the default baseline)"),
    Family("cbramod", "patches", ("eeg",), False,
           "CBraMod EEG encoder (--init: official pretrained_weights.pth or a physiofm export; none: random init)"),
    Family("ecg", "patches", ("ecg",), False,
           "the ECG encoder pretrained with dual masking (--init: its export/encoder.pt; none: random init)"),
    Family("scmm", "de", ("eeg",), True, "SCMM's CNN on DE features (--init: export/encoder.pt of pretrain_scmm)"),
    Family("physiosync", "samples", ("eeg", "ecg", "peripheral"), True,
           "PhysioSync's long/short encoders (--init: the export folder of pretrain_physiosync)"),
)}
HEADS = {"concat": "concatenated embeddings -> MLP (EEG ⊕ ECG)", "late": "mean of per-modality probabilities",
         "gated": "PhysioSync's confidence-gated long/short fusion", "scmm": "SCMM's target-domain classifier"}


def read_bytes(uri: str) -> bytes:
    from physiofm.data import storage

    fs, path = storage.fsspec_filesystem(uri)
    if not storage.retry(lambda: fs.exists(path)):
        raise ConfigError(f"--init: no such file {uri!r}")
    return storage.retry(lambda: fs.cat_file(path), what=f"read {uri}")


def _load(data: bytes, uri: str) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad --init
        raise ConfigError(f"--init {uri!r} is not a weights file that torch.load(weights_only=True) reads "
                          f"({type(err).__name__}); give a state_dict or a physiofm export (.pt)") from err


def _run_record(uri: str) -> dict:
    """The pretraining run record beside an export (<run>/step_N/export/x.pt -> <run>/physiofm-run.yaml)."""
    from physiofm.data import storage
    from physiofm.platform.run_record import read_record

    run = posixpath.dirname(posixpath.dirname(posixpath.dirname(uri.rstrip("/"))))
    try:
        return dict(read_record(run) or {}) if run and storage.exists(run) else {}
    except Exception:  # noqa: BLE001 - provenance only
        return {}


def inspect_init(family: str, modality: str, dataset: str, uri: str) -> tuple[dict[str, bytes], dict]:
    """(the weights files the workers rebuild the encoder from, its provenance); raises ConfigError
    when the export is not that family's, or was pretrained on another modality or channel count."""
    fam = FAMILIES[family]
    if fam.name == "physiosync":
        return _inspect_physiosync(modality, dataset, uri)
    data = read_bytes(uri)
    payload = _load(data, uri)
    record = _run_record(uri)
    method = record.get("config", {}).get("method", {})
    provenance = {"init": uri, "sha256": hashlib.sha256(data).hexdigest(), "pretraining": method.get("name", ""),
                  "pretraining_corpus": record.get("config", {}).get("data", {}).get("corpus", "")}
    if fam.name in ("cbramod", "ecg"):
        from physiofm.encoders.cbramod import EXPORT_FORMAT, config_from_state_dict

        official = isinstance(payload, dict) and "patch_embedding.mask_encoding" in payload
        if not official and not (isinstance(payload, dict) and payload.get("format") == EXPORT_FORMAT):
            raise ConfigError(f"--init {uri!r} is not a CBraMod-class encoder (official state_dict or a physiofm "
                              f"export, format {EXPORT_FORMAT!r}); --encoder {family} needs one")
        config = config_from_state_dict(payload) if official else payload["config"]
        patch = config.patch_size if official else config["patch_size"]
        if patch != 200:
            raise ConfigError(f"--init {uri!r} takes patches of {patch} samples; the fine-tuning windows give 200 "
                              "(1 s at 200 Hz)")
        pretrained_on = "eeg" if official else method.get("modality", "")
        if pretrained_on and pretrained_on != fam.modalities[0]:
            raise ConfigError(f"--init {uri!r} was pretrained on {pretrained_on} windows; --encoder {family} "
                              f"encodes {fam.modalities[0]}: use --encoder {'cbramod' if pretrained_on == 'eeg' else 'ecg'} "
                              f"for this export")
        provenance["source"] = "official CBraMod pretrained_weights.pth" if official else "physiofm export"
        return {"encoder": data}, provenance
    if fam.name == "scmm":
        config = _module_config(payload, uri, "physiofm.encoders.scmm.SCMMEncoder", family)
        allowed = {62: ("seed", "seediv"), 32: ("seed", "seediv", "deap")}
        if dataset not in allowed.get(config["n_channels"], ()):
            raise ConfigError(f"--init {uri!r} is an SCMM encoder of {config['n_channels']} channels; it fits "
                              f"datasets {list(allowed.get(config['n_channels'], ()))} (62: SEED / SEED-IV; 32: DEAP's "
                              f"electrodes), not {dataset!r}")
        provenance["source"] = f"SCMM export ({config['n_channels']} channels)"
        provenance["pretraining_pair"] = f"{method.get('source', '?')} -> {method.get('target', '?')}"
        return {"encoder": data}, provenance
    raise ConfigError(f"--encoder {family} takes no --init")


def _module_config(payload: Any, uri: str, cls: str, family: str) -> dict:
    if not isinstance(payload, dict) or payload.get("format") != "physiofm.module.v1" or payload.get("class") != cls:
        found = payload.get("class") if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"--init {uri!r} holds {found!r}; --encoder {family} needs an export of {cls}")
    return payload["config"]


def _inspect_physiosync(modality: str, dataset: str, uri: str) -> tuple[dict[str, bytes], dict]:
    from physiofm.data import storage

    if dataset not in PHYSIOSYNC_PERIPHERAL:
        raise ConfigError(f"--encoder physiosync fits datasets {sorted(PHYSIOSYNC_PERIPHERAL)} (its published "
                          f"layouts), not {dataset!r}")
    role = "eeg" if modality == "eeg" else "peripheral"
    expected = DATASET_MODALITIES[dataset]["eeg"] if role == "eeg" else PHYSIOSYNC_PERIPHERAL[dataset][1]
    files, sha = {}, hashlib.sha256()
    for resolution in ("long", "short"):
        path = storage.join(uri, f"{role}_{resolution}.pt")
        if not storage.exists(path):
            if resolution == "long":
                raise ConfigError(f"--init {uri!r}: no {role}_long.pt; --encoder physiosync needs the export folder of "
                                  "jobs/pretrain_physiosync.py")
            continue
        data = read_bytes(path)
        config = _module_config(_load(data, path), path, "physiofm.encoders.physiosync.PhysioSyncEncoder", "physiosync")
        samples = {"long": 640, "short": 128}[resolution]
        if config["n_channels"] != expected or config["n_samples"] != samples:
            raise ConfigError(f"{path}: a PhysioSync {role} encoder of {config['n_channels']} channels x "
                              f"{config['n_samples']} samples; {dataset} {modality} windows are {expected} x {samples} "
                              f"({resolution}, 128 Hz)")
        files[resolution] = data
        sha.update(data)
    record = _run_record(storage.join(uri, "eeg_long.pt"))
    return files, {"init": uri, "sha256": sha.hexdigest(), "source": "PhysioSync export (" + "+".join(files) + ")",
                   "pretraining": record.get("config", {}).get("method", {}).get("name", "")}


def build_encoder(family: str, n_channels: int, weights: Mapping[str, bytes] | None, fold_stats: Mapping | None = None):
    """The encoder module of `family` for windows of `n_channels`, from its weights files (or
    freshly initialised); SCMM gets the min-max scaling fitted on the fold's training side."""
    import torch

    if family == "spectral":
        from physiofm.encoders.spectral import SpectralEncoder, SpectralEncoderConfig

        return SpectralEncoder(SpectralEncoderConfig(n_channels=n_channels))
    if family in ("cbramod", "ecg"):
        from physiofm.encoders.cbramod import CBraMod

        if weights:
            return CBraMod.from_pretrained(io.BytesIO(weights["encoder"]))
        return CBraMod()
    from physiofm.platform.export import load_encoder

    if family == "scmm":
        from physiofm.encoders.embedders import SCMMEmbedder
        from physiofm.encoders.scmm import FeatureScaling, FeatureScalingConfig

        scaling = None
        if fold_stats:
            scaling = FeatureScaling(FeatureScalingConfig(tuple(fold_stats["minimum"]), tuple(fold_stats["maximum"])))
        return SCMMEmbedder(load_encoder(io.BytesIO(weights["encoder"])), scaling)
    if family == "physiosync":
        from physiofm.encoders.embedders import PhysioSyncEmbedder

        long = load_encoder(io.BytesIO(weights["long"]))
        short = load_encoder(io.BytesIO(weights["short"])) if "short" in weights else None
        return PhysioSyncEmbedder(long, short, n_slices=5)
    raise ConfigError(f"unknown encoder family {family!r}; allowed: {sorted(FAMILIES)}")

