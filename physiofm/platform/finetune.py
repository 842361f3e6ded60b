"""Fine-tune and evaluate encoders on emotion labels under a protocol, folds in parallel on Ray.

    result = run_protocol(FinetuneConfig(dataset="dreamer", root="/data/DREAMER", protocol="loso",
                                         label="arousal", encoder="eeg=cbramod,ecg=ecg", init=...))
    result.mean["balanced_accuracy"], result.validation_mean["kappa"], result.folds[0]["metrics"]

Order of work, each step before the next may start:
1. `plan(config)`: every request check that needs no data (dataset, protocol, label, modalities,
   encoders and heads; each `--init` export's header against the dataset's channels and modality;
   subjects counted from the file names where a layout names them) — nothing has started yet;
2. the corpora are prepared by the data pipeline (Ray Data) with the encoders' preset, cached;
3. windows are labelled with the scheme, the protocol's folds are made (`physiofm.evaluation`);
4. one Ray task per fold (`physiofm.platform.fold.fit_fold`, the one training loop in each), in
   parallel; 5. metrics (scikit-learn) per fold and over folds; the caller writes the report.

A sweep trial (Ray Tune) calls `run_protocol` with `evaluate_test=False` and reads
`validation_mean`: the test windows of a fold are then never predicted. A trial that reports every
epoch (ASHA) runs one fold in its own process instead: `prepared = prepare_protocol(config)`, then
`fit_fold(prepared.fold_task(k), prepared.fold_arrays(), prepared.plan.weights, on_epoch=report)`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from physiofm.data import storage
from physiofm.data.labels import DEFAULT_LABELS, SCHEMES, LabelScheme, decode_ratings, label_scheme, shared_labels
from physiofm.evaluation.metrics import METRICS, chance_metrics, classification_metrics, confusion, summarize
from physiofm.evaluation.protocols import (PROTOCOLS, ProtocolConfig, ProtocolError, WindowTable, make_folds,
                                           split_document)
from physiofm.platform.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig
from physiofm.platform.downstream import DATASET_MODALITIES, FAMILIES, HEADS, PHYSIOSYNC_PERIPHERAL, inspect_init

Log = Callable[[str], None]
DATASETS = tuple(SCHEMES)
META_COLUMNS = ["dataset", "subject", "session", "trial", "window_index", "label", "labels"]


@dataclass
class FinetuneConfig:
    """One fine-tuning run: a dataset under a protocol, with encoders, a head and a recipe."""

    dataset: str = "dreamer"
    root: str = ""  # the dataset's native layout (local or s3://); "" = the embedded demo corpus
    protocol: str = "subject-dependent"
    label: str = ""  # "" = the dataset's default (valence, or SEED's classes)
    encoder: str = "spectral"  # a family for every modality, or per modality: "eeg=cbramod,ecg=ecg"
    init: str = ""  # the pretrained encoder's file (or folder), or per modality: "eeg=PATH,ecg=PATH"
    modalities: tuple[str, ...] = ()  # () = every modality of the dataset that the encoders take
    head: str = ""  # "" = concat ("scmm" for the SCMM encoder)
    freeze: bool = False
    pooling: str = ""  # "" = flatten for a trained CBraMod/ECG encoder (official recipe), else mean
    hidden_dims: tuple[int, ...] = ()  # () = (128,) spectral, (256,) mean, (N*200, 200) flatten
    dropout: float = 0.1
    folds: int = 5
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.0  # the head's; 0 = 3e-3 for the spectral baseline, 1e-3 (CBraMod's head lr) otherwise
    backbone_lr: float = 1e-4  # trained encoders'
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    window_s: float = 4.0  # patch encoders (SCMM: 1 s, PhysioSync: 5 s, their recipes)
    seed: int = 0
    validation_fraction: float = 0.2
    per_subject: bool = False
    adapt_fraction: float = 0.6
    source: str = ""  # cross-corpus: the source dataset trained on beside the target's adaptation part
    source_root: str = ""
    shuffle_labels: bool = False  # control: each subject's trial labels permuted (seeded)
    selection_metric: str = "kappa"
    output: str = ""
    prepared_cache: str = ""  # where prepared windows are kept ("" = the cache folder)
    cpus_per_fold: float = 1.0
    gpus_per_fold: float = 0.0
    fold_indices: tuple[int, ...] = ()  # () = every fold
    evaluate_test: bool = True
    save_models: bool = True
    command: str = ""  # recorded in the report

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Plan:
    """A validated request: what will be read, prepared, trained and how."""

    config: FinetuneConfig
    scheme: LabelScheme
    encoders: dict[str, str]
    columns: dict[str, str]
    form: str
    preset: str
    preset_options: dict[str, Any]
    corpora: list[tuple[str, str, str]]  # (role, dataset, root)
    head: str
    pooling: str
    hidden_dims: tuple[int, ...]
    weights: dict[str, dict[str, bytes]] = field(default_factory=dict)
    provenance: dict[str, dict] = field(default_factory=dict)


def _pairs(text: str, what: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """"a=b,c=d" -> {a: b, c: d}; a plain value -> {"": value}."""
    if "=" not in text:
        return {"": text} if text else {}
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in allowed or not value:
            raise ConfigError(f"--{what} {text!r}: each entry must be MODALITY=VALUE with a modality among "
                              f"{list(allowed)}, got {part!r}")
        out[key] = value
    return out


def _choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"--{name} {value!r} is not allowed; allowed: {sorted(allowed) if not isinstance(allowed, tuple) else list(allowed)}")


def plan(config: FinetuneConfig, require_init: bool = True) -> Plan:
    """Check the request before anything starts; every error names the value and what is allowed.
    `require_init=False` accepts an encoder that needs `--init` without one (a sweep checks its
    trials' requests before their pretraining has written the exports)."""
    cfg = config
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("protocol", cfg.protocol, PROTOCOLS)
    if cfg.protocol == "cross-corpus" and not (cfg.source or cfg.root or cfg.init):
        from physiofm.platform.demo import EMOTION_DEMO_SOURCE

        cfg.source = EMOTION_DEMO_SOURCE[cfg.dataset]  # the demo: the paired demo corpus as the source
    label = cfg.label or DEFAULT_LABELS[cfg.dataset]
    try:
        scheme = label_scheme(cfg.dataset, label)
    except ValueError as err:
        raise ConfigError(f"--label: {err}") from err
    available = DATASET_MODALITIES[cfg.dataset]
    families = _pairs(cfg.encoder or "spectral", "encoder", tuple(available))
    for family in families.values():
        _choice("encoder", family, tuple(FAMILIES))
    modalities = tuple(cfg.modalities)
    for m in modalities:
        if m not in available:
            raise ConfigError(f"--modalities: {cfg.dataset} has no {m!r} signals; its modalities: {list(available)}")
    if cfg.protocol == "cross-corpus" and cfg.source in DATASET_MODALITIES and not modalities:
        available = {m: c for m, c in available.items() if m in DATASET_MODALITIES[cfg.source]}  # both record
    if "" in families:
        family = FAMILIES[families[""]]
        if not modalities:
            modalities = tuple(m for m in available if m in family.modalities)
            if family.name == "physiosync" and cfg.dataset in PHYSIOSYNC_PERIPHERAL:
                modalities = ("eeg", PHYSIOSYNC_PERIPHERAL[cfg.dataset][0])
        encoders = {m: family.name for m in modalities}
    else:
        encoders = {m: families[m] for m in (modalities or tuple(families)) if m in families}
        missing = [m for m in modalities if m not in families]
        if missing:
            raise ConfigError(f"--encoder {cfg.encoder!r} names no encoder for modalities {missing} of --modalities")
    if not encoders:
        raise ConfigError(f"--encoder {cfg.encoder!r} takes none of {cfg.dataset}'s modalities {list(available)}")
    for m, family in encoders.items():
        if m not in FAMILIES[family].modalities:
            raise ConfigError(f"--encoder {family} encodes {list(FAMILIES[family].modalities)}, not {m!r} "
                              f"(--modalities {','.join(encoders)})")
    forms = {FAMILIES[f].form for f in encoders.values()}
    if len(forms) > 1:
        raise ConfigError(f"--encoder {cfg.encoder!r}: encoders {dict(encoders)} need windows of different forms; "
                          "fuse patch encoders (spectral, cbramod, ecg) together, or use one of scmm / physiosync")
    form = forms.pop()
    head = cfg.head or ("scmm" if form == "de" else "concat")
    _choice("head", head, tuple(HEADS))
    if head == "gated" and form != "samples":
        raise ConfigError(f"--head gated is PhysioSync's fusion: it needs --encoder physiosync, got {cfg.encoder!r}")
    if head == "scmm" and form != "de":
        raise ConfigError(f"--head scmm is SCMM's classifier: it needs --encoder scmm, got {cfg.encoder!r}")
    if head == "late" and len(encoders) < 2:
        raise ConfigError(f"--head late averages several modalities' probabilities; {list(encoders)} is one")
    _choice("selection-metric", cfg.selection_metric, METRICS)
    for name, value, low in (("folds", cfg.folds, 2), ("epochs", cfg.epochs, 1), ("batch-size", cfg.batch_size, 2)):
        if value < low:
            raise ConfigError(f"--{name} must be >= {low}, got {value}")
    if not cfg.lr:
        cfg.lr = 3e-3 if set(families.values()) == {"spectral"} else 1e-3
    for name, value in (("lr", cfg.lr), ("backbone-lr", cfg.backbone_lr), ("window-s", cfg.window_s)):
        if not value > 0:
            raise ConfigError(f"--{name} must be > 0, got {value}")
    if not 0.0 < cfg.validation_fraction < 1.0:
        raise ConfigError(f"--validation-fraction must be in (0, 1), got {cfg.validation_fraction}")
    if form == "patches" and abs(cfg.window_s - round(cfg.window_s)) > 1e-9:
        raise ConfigError(f"--window-s must be a whole number of 1-s patches, got {cfg.window_s}")

    corpora = [("target", cfg.dataset, cfg.root)]
    if cfg.protocol == "cross-corpus":
        corpora += _source_corpus(cfg, scheme, encoders)
    elif cfg.source or cfg.source_root:
        raise ConfigError(f"--source / --source-root belong to --protocol cross-corpus, not {cfg.protocol!r}")
    for _, dataset, root in corpora:
        _check_subject_count(cfg, dataset, root)

    preset, options, columns = _preset(cfg, encoders, form, [d for _, d, _ in corpora])
    pooling = cfg.pooling or ("flatten" if not cfg.freeze and set(encoders.values()) <= {"cbramod", "ecg"} else "mean")
    _choice("pooling", pooling, ("mean", "flatten"))
    hidden = tuple(cfg.hidden_dims) or (
        (int(round(cfg.window_s)) * 200, 200) if pooling == "flatten" else
        (128,) if set(encoders.values()) == {"spectral"} else (256,))
    result = Plan(cfg, scheme, encoders, columns, form, preset, options, corpora, head, pooling, hidden)
    inits = _pairs(cfg.init, "init", tuple(encoders))
    if "" in inits and set(encoders.values()) == {"physiosync"}:
        inits = {m: inits[""] for m in encoders}  # one export folder holds both modalities' encoders
    if "" in inits:
        pretrained = [m for m, f in encoders.items() if f != "spectral"]
        if len(pretrained) != 1:
            raise ConfigError(f"--init {cfg.init!r}: say which modality it is for (MODALITY=PATH); encoders "
                              f"{dict(encoders)}")
        inits = {pretrained[0]: inits[""]}
    for m, family in encoders.items():
        if m in inits:
            if family == "spectral":
                raise ConfigError(f"--init for {m}: the spectral encoder has no pretrained weights")
            result.weights[m], result.provenance[m] = inspect_init(family, m, cfg.dataset, inits[m])
        elif FAMILIES[family].needs_init and require_init:
            raise ConfigError(f"--encoder {family} needs --init (for {m}): {FAMILIES[family].description}")
        else:
            result.provenance[m] = {"source": "no pretraining" if family == "spectral"
                                    else "random initialisation, no --init"}
    Recipe(result).validate()
    return result


class Recipe:
    """The method config and `TrainConfig` every fold trains with; validated at planning time, so
    a bad head or encoder combination is refused before anything starts."""

    def __init__(self, p: Plan):
        self.plan = p

    def method(self, shapes: dict | None = None):
        from physiofm.platform.methods.supervised import SupervisedMethodConfig

        p = self.plan
        return SupervisedMethodConfig(
            dataset=p.config.dataset, label=p.scheme.name, num_classes=p.scheme.num_classes, encoders=dict(p.encoders),
            inputs=dict(p.columns), shapes=dict(shapes or {}), head=p.head, freeze=p.config.freeze,
            pooling=p.pooling, hidden_dims=p.hidden_dims, dropout=p.config.dropout,
            label_smoothing=p.config.label_smoothing, backbone_lr=p.config.backbone_lr)

    def validate(self) -> None:
        self.train_config({}).validate()

    def train_config(self, shapes: dict) -> TrainConfig:
        cfg = self.plan.config
        return TrainConfig(method=self.method(shapes), data=DataConfig(batch_size=cfg.batch_size),
                           optim=OptimConfig(lr=cfg.lr, min_lr=0.0, weight_decay=cfg.weight_decay, warmup_steps=0,
                                             grad_clip=1.0),
                           run=RunConfig(name="finetune", seed=cfg.seed))


def _source_corpus(cfg: FinetuneConfig, scheme: LabelScheme, encoders: dict[str, str]) -> list[tuple[str, str, str]]:
    if not cfg.source:
        if cfg.init:
            return []  # an encoder pretrained on the source corpus (its provenance says which): adapt + test only
        raise ConfigError("--protocol cross-corpus needs --source DATASET --source-root URI (a labelled source "
                          "corpus), or an --init encoder pretrained on the source corpus")
    _choice("source", cfg.source, DATASETS)
    if cfg.source == cfg.dataset:
        raise ConfigError(f"--source {cfg.source!r} is the target dataset; cross-corpus needs another corpus")
    if scheme.name not in shared_labels(cfg.source, cfg.dataset):
        raise ConfigError(f"--label {scheme.name!r} is not shared by {cfg.source} and {cfg.dataset}; labels both "
                          f"define: {shared_labels(cfg.source, cfg.dataset)}")
    for m in encoders:
        if m not in DATASET_MODALITIES[cfg.source]:
            raise ConfigError(f"--source {cfg.source} has no {m!r} signals (its modalities: "
                              f"{list(DATASET_MODALITIES[cfg.source])}); choose --modalities both corpora record")
        if m != "eeg" and DATASET_MODALITIES[cfg.source][m] != DATASET_MODALITIES[cfg.dataset][m]:
            raise ConfigError(f"{m}: {cfg.source} has {DATASET_MODALITIES[cfg.source][m]} channels, {cfg.dataset} "
                              f"{DATASET_MODALITIES[cfg.dataset][m]}; one head needs one channel count")
    if cfg.source_root == "" and cfg.root:
        raise ConfigError(f"--source {cfg.source} needs --source-root (its native layout)")
    return [("source", cfg.source, cfg.source_root)]


def _preset(cfg: FinetuneConfig, encoders: dict[str, str], form: str, datasets: list[str]):
    """(preset name, options, column of each modality) for these encoders on these datasets."""
    if form == "de":
        deap = "deap" in datasets
        for dataset in datasets:
            if dataset not in ("seed", "seediv", "deap"):
                raise ConfigError(f"--encoder scmm reads DE features of SEED, SEED-IV or DEAP; not {dataset!r}")
        return ("scmm-de-deap32" if deap else "scmm-de"), {}, {"eeg": "x"}
    if form == "samples":
        return "physiosync", {}, {m: "eeg" if m == "eeg" else "peripheral" for m in encoders}
    options: dict[str, Any] = {"modalities": tuple(encoders), "window_s": float(cfg.window_s)}
    if len(set(datasets)) > 1 and "eeg" in encoders:
        options["eeg_channels"] = common_eeg_channels(datasets)
    return "emotion", options, {m: m for m in encoders}


def common_eeg_channels(datasets: list[str]) -> tuple[str, ...]:
    """The EEG electrodes every dataset records, in the first one's order (10-20 names)."""
    from physiofm.data.channels import DEAP_EEG_32, EMOTIV_14, SEED_62, canonical_eeg

    lists = {"deap": DEAP_EEG_32, "dreamer": EMOTIV_14, "amigos": EMOTIV_14, "seed": SEED_62, "seediv": SEED_62}
    names = [canonical_eeg(n) for n in lists[datasets[0]]]
    for dataset in datasets[1:]:
        have = {canonical_eeg(n) for n in lists[dataset]}
        names = [n for n in names if n in have]
    if len(names) < 2:
        raise ConfigError(f"datasets {datasets} share {len(names)} EEG electrodes; a cross-corpus head needs more")
    return tuple(names)


def _subjects_from_names(dataset: str, root: str) -> list[str] | None:
    """Subjects named by the files of a layout that has one file per subject (None: not countable)."""
    import re

    patterns = {"deap": r"^s(\d+)\.dat$", "seed": r"^(\d+)_\d+\.mat$", "seediv": r"^(\d+)_\d+\.mat$",
                "amigos": r"^Data_Preprocessed_P(\d+)\.mat$"}
    if dataset not in patterns or not root or not storage.exists(root):
        return None
    names = {Path(p).name for p in storage.walk(root)}
    return sorted({m[1] for m in (re.match(patterns[dataset], n) for n in names) if m})


def _check_subject_count(cfg: FinetuneConfig, dataset: str, root: str) -> None:
    if root and not storage.exists(root):
        raise ConfigError(f"--root {root!r}: nothing there (a folder in {dataset}'s native layout)")
    subjects = _subjects_from_names(dataset, root)
    if subjects is None or cfg.protocol not in ("loso", "cross-subject"):
        return
    needed = 3 if cfg.protocol == "loso" else max(3, cfg.folds + 1)
    if len(subjects) < needed:
        raise ConfigError(f"--protocol {cfg.protocol} needs >= {needed} subjects (test, validation and training "
                          f"subjects apart{f' over --folds {cfg.folds}' if cfg.protocol == 'cross-subject' else ''}); "
                          f"{root} holds {len(subjects)}: {subjects}; use --protocol subject-dependent")


# ---------------------------------------------------------------- data: prepare, read, label

def prepared_uri(p: Plan, dataset: str, root: str) -> str:
    from physiofm.data.presets import get_preset
    from physiofm.platform.cli import cache_dir

    recipe = json.dumps({"root": root, "preset": get_preset(p.preset, **p.preset_options).to_dict()}, sort_keys=True)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    base = p.config.prepared_cache or str(cache_dir() / "prepared")
    return storage.join(base, f"{dataset}-{p.preset}-{key}")


def demo_root(dataset: str, seed: int = 0) -> str:
    from physiofm.platform.cli import cache_dir
    from physiofm.platform.demo import emotion_demo_corpus

    return emotion_demo_corpus(dataset, cache_dir() / "demo" / f"finetune-{dataset}-seed{seed}" / "raw", seed)


def load_windows(p: Plan, log: Log = print) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Prepare (or reuse) every corpus, read its windows, label them: (arrays, description)."""
    from physiofm.data.loader import corpus_info, read_windows
    from physiofm.data.pipeline import prepare_corpus

    parts, described = [], {}
    for role, dataset, root in p.corpora:
        if not root:
            root = demo_root(dataset)
            log(f"[finetune] no --{'root' if role == 'target' else 'source-root'} given: demo {dataset} corpus in {root}")
        uri = prepared_uri(p, dataset, root)
        log(f"[finetune] {role} {dataset}: windows with preset '{p.preset}' in {uri}")
        prepare_corpus([root], uri, preset=p.preset, preset_options=p.preset_options, progress=log)
        info = corpus_info(uri)
        columns = sorted(set(p.columns.values()))
        windows = read_windows(uri, columns=[*columns, *META_COLUMNS])
        scheme = label_scheme(dataset, p.scheme.name)
        y = scheme.assign(windows["label"], decode_ratings(windows["labels"]))
        described[role] = {"dataset": dataset, "root": root, "prepared": uri, "windows": int(len(y)),
                           "unlabelled_windows": int((y < 0).sum()), "files": info["counts"]["files"],
                           "rejected_files": info["counts"]["rejected"], "label_scheme": scheme.to_dict(),
                           "shapes": {c: info["columns"][c]["shape"] for c in columns}}
        keep = y >= 0
        part = {c: windows[c][keep] for c in columns}
        part.update(y=y[keep], role=np.full(int(keep.sum()), role, dtype=object),
                    **{c: np.asarray(windows[c][keep]).astype(str) for c in ("dataset", "subject", "session", "trial")},
                    window_index=np.asarray(windows["window_index"][keep]))
        parts.append(part)
    arrays = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    # one canonical order, whatever order the pipeline wrote its shards in
    order = np.lexsort((arrays["window_index"], arrays["trial"], arrays["session"], arrays["subject"],
                        arrays["dataset"], arrays["role"]))
    arrays = {k: v[order] for k, v in arrays.items()}
    shapes = {c: tuple(described["target"]["shapes"][c]) for c in set(p.columns.values())}
    for role, part in described.items():
        for c, shape in part["shapes"].items():
            if tuple(shape) != shapes[c]:
                raise ConfigError(f"column {c!r}: {role} windows are {shape}, target windows {list(shapes[c])}")
    return arrays, {"corpora": described, "shapes": shapes}


def window_table(arrays: dict[str, np.ndarray]) -> WindowTable:
    subject = np.char.add(np.char.add(arrays["dataset"].astype(str), ":"), arrays["subject"].astype(str))
    session = np.where(arrays["session"] == "", "", np.char.add(arrays["session"].astype(str), "/"))
    trial = np.char.add(np.char.add(subject, "/"), np.char.add(session.astype(str), arrays["trial"].astype(str)))
    order = np.zeros(len(trial), dtype=np.int64)
    for s in np.unique(subject):
        mine = subject == s
        keys = sorted(set(zip(arrays["session"][mine].tolist(), arrays["trial"][mine].tolist())),
                      key=lambda k: (k[0], int(k[1]) if k[1].isdigit() else 0, k[1]))
        rank = {k: i for i, k in enumerate(keys)}
        order[mine] = [rank[k] for k in zip(arrays["session"][mine].tolist(), arrays["trial"][mine].tolist())]
    return WindowTable(subject=subject.astype(object), trial=trial.astype(object), y=arrays["y"],
                       role=arrays["role"], trial_order=order)


def shuffle_trial_labels(table: WindowTable, seed: int, tries: int = 256) -> np.ndarray:
    """Each subject's trial classes permuted among its trials (windows keep their trial's new class).

    Of `tries` seeded permutations, the one whose agreement with the true classes is closest to
    what chance gives (the sum of squared class shares) is kept: with few trials, a single random
    permutation may keep most labels by luck, and a strong effect would then still score well."""
    rng = np.random.default_rng([seed, 31337])
    y = np.array(table.y, copy=True)
    trial_of = {}
    for index, trial in enumerate(table.trial.tolist()):
        trial_of.setdefault(trial, []).append(index)
    for subject in sorted(set(table.subject.tolist())):
        trials = sorted({t for t, s in zip(table.trial.tolist(), table.subject.tolist()) if s == subject})
        classes = np.array([int(table.y[trial_of[t][0]]) for t in trials])
        shares = np.bincount(classes) / len(classes)
        expected = float((shares ** 2).sum())
        candidates = [rng.permutation(classes) for _ in range(tries)]
        best = min(candidates, key=lambda c: abs(float((c == classes).mean()) - expected))
        for t, c in zip(trials, best):
            y[trial_of[t]] = c
    return y


# ---------------------------------------------------------------- the run

@dataclass
class ProtocolResult:
    document: dict[str, Any]  # metrics.json
    folds: list[dict[str, Any]]  # per fold: metrics, predictions, curve, model bytes

    @property
    def mean(self) -> dict[str, float]:
        return self.document["mean"]

    @property
    def validation_mean(self) -> dict[str, float]:
        return self.document["validation"]


@dataclass
class Prepared:
    """A run's data and folds, ready for fold tasks (what a sweep trial may use one fold of)."""

    plan: Plan
    arrays: dict[str, np.ndarray]
    table: WindowTable
    folds: list
    protocol: ProtocolConfig
    train_config: TrainConfig
    described: dict[str, Any]
    started: float

    def fold_task(self, index: int, device: str = "cpu") -> dict[str, Any]:
        """The `fit_fold` task of fold `index`."""
        cfg, fold = self.plan.config, self.folds[index]
        return {"train_config": self.train_config.to_dict(), "epochs": cfg.epochs,
                "selection_metric": cfg.selection_metric, "evaluate_test": cfg.evaluate_test,
                "save_model": cfg.save_models, "device": device,
                "fold": {"name": fold.name, "index": index, "subject": fold.subject, "train": fold.train,
                         "validation": fold.validation, "test": fold.test}}

    def fold_arrays(self) -> dict[str, np.ndarray]:
        return {c: self.arrays[c] for c in (*set(self.plan.columns.values()), "y")}


def prepare_protocol(config: FinetuneConfig, *, address: str | None = None, log: Log = print,
                     checked: Plan | None = None) -> Prepared:
    """Plan, prepare and label the corpora, and make the protocol's folds (steps 1-3)."""
    from physiofm.platform.trainer import connect_ray

    started = time.perf_counter()
    p = checked or plan(config)
    cfg = p.config
    connect_ray(address, log)
    arrays, described = load_windows(p, log)
    table = window_table(arrays)
    if cfg.shuffle_labels:
        arrays["y"] = shuffle_trial_labels(table, cfg.seed)
        table = dataclasses.replace(table, y=arrays["y"])
        log(f"[finetune] labels shuffled among each subject's trials (seed {cfg.seed}): a chance-level control")
    present = sorted(set(arrays["y"].tolist()))
    if len(present) < 2:
        raise ProtocolError(f"label {p.scheme.name!r} gives one class only ({p.scheme.classes[present[0]]}) in this data")
    protocol = ProtocolConfig(cfg.protocol, folds=cfg.folds, seed=cfg.seed, validation_fraction=cfg.validation_fraction,
                              per_subject=cfg.per_subject, adapt_fraction=cfg.adapt_fraction)
    folds = make_folds(table, protocol)
    train_config = Recipe(p).train_config(described["shapes"])
    train_config.method.check_corpus(described["shapes"])
    return Prepared(p, arrays, table, folds, protocol, train_config, described, started)


def run_protocol(config: FinetuneConfig, *, address: str | None = None, log: Log = print,
                 checked: Plan | None = None) -> ProtocolResult:
    """Everything but writing the report: see the module's docstring."""
    import ray

    from physiofm.platform.fold import fit_fold

    prepared = prepare_protocol(config, address=address, log=log, checked=checked)
    p, cfg, folds, table = prepared.plan, prepared.plan.config, prepared.folds, prepared.table
    chosen = list(cfg.fold_indices) or list(range(len(folds)))
    bad = [i for i in chosen if not 0 <= i < len(folds)]
    if bad:
        raise ConfigError(f"fold_indices {bad} out of range: this protocol has folds 0..{len(folds) - 1}")
    log(f"[finetune] {cfg.dataset} {cfg.protocol}, label {p.scheme.name} ({', '.join(p.scheme.classes)}): "
        f"{len(table)} windows, {len(set(table.trial.tolist()))} trials, {len(set(table.subject.tolist()))} subjects; "
        f"{len(chosen)} of {len(folds)} folds in parallel as Ray tasks ({cfg.cpus_per_fold:g} CPU each)")

    arrays_ref, weights_ref = ray.put(prepared.fold_arrays()), ray.put(p.weights)
    task = ray.remote(num_cpus=cfg.cpus_per_fold, num_gpus=cfg.gpus_per_fold, max_retries=0)(fit_fold)
    device = "cuda" if cfg.gpus_per_fold > 0 else "cpu"
    pending = {task.remote(prepared.fold_task(i, device), arrays_ref, weights_ref, max(1, int(cfg.cpus_per_fold))): i
               for i in chosen}
    results: dict[int, dict] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        try:
            results[i] = _score(ray.get(done[0]), p.scheme)
        except ray.exceptions.RayTaskError as err:
            raise RuntimeError(f"{folds[i].name} failed: {err}") from err
        r = results[i]
        test = r.get("metrics", {})
        log(f"[finetune] {r['name']} ({len(results)}/{len(chosen)}): best epoch {r['best_epoch']}, "
            f"validation {cfg.selection_metric} {r['validation'].get(cfg.selection_metric, math.nan):.3f}"
            + (f", test balanced accuracy {test['balanced_accuracy']:.3f} (chance {r['chance']['balanced_accuracy']:.3f})"
               if test else "") + f", {r['seconds']:.1f} s")
    return finish_protocol(prepared, [results[i] for i in chosen], chosen)


def finish_protocol(prepared: Prepared, scored: list[dict], chosen: list[int]) -> ProtocolResult:
    """The run's metrics document from its scored folds (`score_fold` of each `fit_fold` result, in
    the order of `chosen`): what `run_protocol` returns, also for folds run elsewhere (a sweep trial)."""
    document = _document(prepared.plan, scored, prepared.folds, chosen, prepared.protocol, prepared.described,
                         prepared.table, time.perf_counter() - prepared.started)
    return ProtocolResult(document, scored)


def score_fold(result: dict, scheme: LabelScheme) -> dict:
    """A `fit_fold` result with its validation (and test) metrics, chance and confusion matrix."""
    return _score(result, scheme)


def _score(result: dict, scheme: LabelScheme) -> dict:
    k = scheme.num_classes
    out = dict(result)
    if "validation_y" in result:
        out["validation"] = classification_metrics(result["validation_y"], result["validation_prob"], k)
    else:
        out["validation"] = {name: math.nan for name in METRICS}
    if "test_y" in result:
        out["metrics"] = classification_metrics(result["test_y"], result["test_prob"], k)
        out["chance"] = chance_metrics(result["test_y"], k)
        out["confusion"] = confusion(result["test_y"], result["test_prob"], k)
        out["class_counts"] = np.bincount(result["test_y"], minlength=k).tolist()
    return out


def _per_subject(results: list[dict], folds, table: WindowTable, num_classes: int) -> list[dict]:
    """Each subject's test predictions gathered over the k folds (every trial of it tested once, by
    a model that never saw that trial), scored per subject. A model that only learnt which subject
    a window comes from, and that subject's usual class, scores chance here (balanced accuracy 0.5),
    as it would not on the pooled windows of a fold."""
    gathered: dict[str, tuple[list, list]] = {}
    for r in results:
        if "test_y" not in r:
            continue
        owners = table.subject[folds[r["index"]].test]
        for subject in sorted(set(owners.tolist())):
            mine = owners == subject
            ys, probs = gathered.setdefault(subject, ([], []))
            ys.append(r["test_y"][mine])
            probs.append(r["test_prob"][mine])
    rows = []
    for subject, (ys, probs) in sorted(gathered.items()):
        y, prob = np.concatenate(ys), np.concatenate(probs)
        rows.append({"subject": subject, "windows": int(len(y)), "class_counts": np.bincount(y, minlength=num_classes).tolist(),
                     "metrics": classification_metrics(y, prob, num_classes), "chance": chance_metrics(y, num_classes)})
    return rows


def _clean(values: dict[str, float], binary: bool) -> dict[str, float | None]:
    return {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v)
            for k, v in values.items() if binary or k != "auroc"}


def _document(p: Plan, results: list[dict], folds, chosen, protocol: ProtocolConfig, described: dict,
              table: WindowTable, seconds: float) -> dict:
    cfg = p.config
    binary = p.scheme.num_classes == 2
    tested = [r for r in results if "metrics" in r]
    subjects = _per_subject(results, folds, table, p.scheme.num_classes) if cfg.protocol == "subject-dependent" else []
    units = subjects if subjects else tested  # subject-dependent: one score per subject, over its k test folds
    mean, std = summarize([u["metrics"] for u in units]) if units else ({}, {})
    chance, _ = summarize([u["chance"] for u in units]) if units else ({}, {})
    validation, validation_std = summarize([r["validation"] for r in results])
    fold_rows = []
    for r in results:
        row = {"name": r["name"], "index": r["index"], "subject": r["subject"], "best_epoch": r["best_epoch"],
               "windows": r["windows"], "validation": _clean(r["validation"], binary), "seconds": round(r["seconds"], 3)}
        if "metrics" in r:
            row.update(metrics=_clean(r["metrics"], binary), chance=_clean(r["chance"], binary),
                       confusion=r["confusion"], class_counts=r["class_counts"])
        if "frozen_unchanged" in r:
            row["frozen_encoders_unchanged"] = bool(r["frozen_unchanged"])
        fold_rows.append(row)
    split = split_document([folds[i] for i in chosen], protocol)
    return {
        "dataset": cfg.dataset, "protocol": cfg.protocol, "label": p.scheme.to_dict(), "classes": list(p.scheme.classes),
        "split_seed": cfg.seed, "shuffled_labels": cfg.shuffle_labels,
        "modalities": list(p.encoders), "encoders": {m: {"family": f, **p.provenance.get(m, {})}
                                                     for m, f in p.encoders.items()},
        "head": p.head, "frozen": cfg.freeze, "pooling": p.pooling, "hidden_dims": list(p.hidden_dims),
        "preset": p.preset, "preset_options": {k: list(v) if isinstance(v, tuple) else v
                                               for k, v in p.preset_options.items()},
        "mean": _clean(mean, binary), "std": _clean(std, binary), "chance": _clean(chance, binary),
        "validation": _clean(validation, binary), "validation_std": _clean(validation_std, binary),
        "selection_metric": cfg.selection_metric, "averaged_over": "subjects" if subjects else "folds",
        "folds": fold_rows, "subjects": [{**u, "metrics": _clean(u["metrics"], binary), "chance": _clean(u["chance"], binary)}
                                         for u in subjects], "split": split,
        "data": {"windows": len(table), "trials": len(set(table.trial.tolist())),
                 "subjects": len(set(table.subject.tolist())), **described["corpora"]},
        "config": cfg.to_dict(), "seconds": round(seconds, 3),
    }


def write_outputs(result: ProtocolResult, output: str, log: Log = print) -> list[str]:
    """metrics.json, report.md, split.json, a confusion matrix per fold, the training curves, and the
    selected model of each fold under `output` (a folder or s3:// URI); returns what was written."""
    from physiofm.evaluation import report

    doc = result.document
    written: list[str] = []

    def put(name: str, data: bytes) -> None:
        uri = storage.join(output, name)
        storage.write_bytes(uri, data)
        written.append(uri)

    put("metrics.json", json.dumps(doc, indent=1, default=_json_default, allow_nan=False).encode())
    put("split.json", json.dumps(doc["split"], indent=1).encode())
    put("report.md", report.render_markdown(doc, doc["config"].get("command", "")).encode())
    title = f"{doc['dataset']} {doc['label']['name']} {doc['protocol']}"
    for fold in result.folds:
        stem = f"fold_{fold['index'] + 1:02d}"
        if "confusion" in fold:
            put(f"confusion_{stem}.png", report.confusion_png(fold["confusion"], doc["classes"],
                                                              f"{title}\n{fold['name']}"))
        if fold.get("model"):
            put(f"folds/{stem}/model.pt", fold["model"])
    put("training_curves.png", report.curves_png(result.folds, doc["selection_metric"], title))
    return written


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
