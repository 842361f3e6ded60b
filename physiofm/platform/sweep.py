"""Emotion sweeps on Ray Tune: search masking ratios, temperatures and fusion heads, then report.

    outcome = run_sweep(SweepConfig(search_space="infra/tune/emotion-heads.yaml", num_samples=8,
                                    storage="runs", name="heads"))

Order of work: (1) the search space and every trial's fine-tuning request are checked (no Ray
yet); (2) the windows are prepared once and the protocol's folds made (`prepare_protocol`), the
pretraining corpora too, and put in the object store for every trial; (3) Ray Tune runs the
trials (`sweep_trial.run_trial`): Optuna TPE (seeded, its study in an RDB storage) or random
search, ASHA on the validation metric, each trial asking for its CPUs / GPU, as many at once as
the cluster holds; results, TensorBoard event files (one run per trial, with the HParams summary)
and the pretraining runs go under STORAGE/NAME, and re-running the same command resumes the sweep
(finished trials are kept); (4) the best configuration is fine-tuned once more with
`evaluate_test=True`, the only time the test folds are predicted; (5) the report
(`physiofm.evaluation.sweep_report`) is written to STORAGE/NAME/report/.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from physiofm.data import storage
from physiofm.platform.config import ConfigError
from physiofm.platform.search_space import PRETRAININGS, SearchSpace, SearchSpaceError
from physiofm.platform.search_space import load as load_space

Log = Callable[[str], None]
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SPACE = REPO_ROOT / "infra" / "tune" / "emotion-heads.yaml"
SCHEDULERS, SEARCHES = ("asha", "fifo"), ("optuna", "random")


@dataclass
class SweepConfig:
    search_space: str = ""  # "" = infra/tune/emotion-heads.yaml
    num_samples: int = 8
    max_concurrent: int = 0  # 0 = as many as the cluster's resources hold
    scheduler: str = "asha"
    search: str = "optuna"
    storage: str = "runs"  # local folder or s3:// URI
    name: str = "tune-emotion"
    study_storage: str = ""  # SQLAlchemy URL of the Optuna study; "" = sqlite file STORAGE/NAME/optuna.db
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    top_k: int = 5
    evaluate_best: bool = True  # fine-tune the best configuration once with its test folds at the end
    finetune: dict[str, Any] = field(default_factory=dict)  # overrides of the space's `finetune` section
    command: str = ""

    def validate(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler {self.scheduler!r} is not allowed; allowed: {list(SCHEDULERS)}")
        if self.search not in SEARCHES:
            raise ConfigError(f"--search {self.search!r} is not allowed; allowed: {list(SEARCHES)}")
        if self.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent < 0:
            raise ConfigError(f"--max-concurrent must be >= 0 (0: from the cluster's resources), got "
                              f"{self.max_concurrent}")
        if not self.cpus_per_trial > 0 or self.gpus_per_trial < 0:
            raise ConfigError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0, got {self.cpus_per_trial} "
                              f"and {self.gpus_per_trial}")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"--name must be a non-empty name without '/', '\\' or spaces, got {self.name!r}")


@dataclass
class SweepPlan:
    """A checked sweep: the space, the fine-tuning every trial starts from, what the data needs."""

    config: SweepConfig
    space: SearchSpace
    base: Any  # FinetuneConfig
    data_plan: Any  # the Plan the windows are prepared with
    base_encoders: dict[str, str]
    metric: str
    sweep_uri: str
    study_url: str

    @property
    def epochs(self) -> int:
        return int(self.base.epochs)


def plan_sweep(config: SweepConfig) -> SweepPlan:
    """Every check that needs no data: the space, and the fine-tuning request of each head it may pick."""
    from physiofm.platform.finetune import FinetuneConfig, plan
    from physiofm.platform.sweep_trial import metric_name, wire_encoders

    config.validate()
    space = load_space(config.search_space or DEFAULT_SPACE)
    fields = {**space.finetune, **{k: v for k, v in config.finetune.items() if v is not None}}
    for key in ("root", "source_root", "init", "prepared_cache"):
        if fields.get(key) and "=" not in str(fields[key]) and not storage.is_remote(str(fields[key])):
            fields[key] = str(Path(fields[key]).resolve())  # trials run in their own working directories
    base = FinetuneConfig(**fields)
    whole = [g for g in space.groups if PRETRAININGS[g].whole]
    if whole:
        base.encoder = PRETRAININGS[whole[0]].family
        if "head" not in space.finetune and "head" not in config.finetune:
            base.head = "scmm" if whole[0] == "scmm" else "gated"

    def check(cfg, what: str):
        try:
            return plan(dataclasses.replace(cfg), require_init=False)
        except ConfigError as err:
            raise SearchSpaceError(f"search space {space.source}: {what}: {err}") from err

    first = check(base, "the fine-tuning it starts from")
    encoders = dict(first.encoders)
    data_config = base
    if space.groups and not whole:
        data_config = dataclasses.replace(base)
        try:
            data_config.encoder, _ = wire_encoders(encoders, space.groups, {})
        except ConfigError as err:
            raise SearchSpaceError(f"search space {space.source}: {err}") from err
    data_plan = check(data_config, f"pretraining {space.groups}" if space.groups else "the fine-tuning")
    for name in ("head", "pooling"):
        spec = space.parameters.get(name)
        for value in (spec.values if spec is not None and spec.distribution in ("choice", "fixed") else ()):
            check(dataclasses.replace(data_config, **{name: value}), f"parameter {name!r} value {value!r}")
    sweep_uri = storage.join(_absolute(config.storage), config.name)
    study_url = config.study_storage or _default_study_url(sweep_uri, config.name)
    return SweepPlan(config, space, base, data_plan, encoders, metric_name(base.selection_metric), sweep_uri,
                     study_url)


def _absolute(uri: str) -> str:
    return uri if storage.is_remote(uri) else str(Path(storage.strip_scheme(uri)).resolve())


def _default_study_url(sweep_uri: str, name: str) -> str:
    if storage.is_remote(sweep_uri):  # SQLite needs a local file: keep it in the cache, copied beside the results
        from physiofm.platform.cli import cache_dir

        folder = cache_dir() / "sweeps" / name
    else:
        folder = Path(sweep_uri)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


# ---------------------------------------------------------------- resources

def trial_resources(p: SweepPlan) -> dict[str, float]:
    """What Tune reserves for a trial's own process (the driver function): its fine-tuning CPUs / GPU.
    A trial's pretraining workers are not in it: Ray Train schedules them itself (the driver-function
    pattern), so they must find CPUs beside the trials' reservations (`trial_footprint`)."""
    cfg = p.config
    out = {"CPU": float(cfg.cpus_per_trial)}
    if cfg.gpus_per_trial:
        out["GPU"] = float(cfg.gpus_per_trial)
    return out


def trial_footprint(p: SweepPlan) -> dict[str, float]:
    """All a trial holds at its peak: its reservation plus, while it pretrains (one method at a
    time), the Train workers' CPUs and Ray Data's for their stream (`trainer.DATA_CPUS`)."""
    from physiofm.platform.trainer import DATA_CPUS

    out = trial_resources(p)
    pretraining = 0.0
    for group in p.space.groups:
        settings = p.space.pretraining_settings(group)
        workers = int(settings["num_workers"]) * float(settings.get("cpus_per_worker") or 1.0)
        pretraining = max(pretraining, workers + DATA_CPUS)
    out["CPU"] += pretraining
    return out


def concurrency(p: SweepPlan, cluster: dict[str, float], log: Log = print) -> int:
    """Trials at once: --max-concurrent, or as many trials' footprints as the cluster's resources
    hold (so that pretraining workers always find CPUs beside the trials' reservations); when
    asked for more than the cluster holds now, the autoscaler is asked for the rest."""
    need = trial_footprint(p)
    fits = min(int(math.floor(cluster.get(k, 0.0) / v + 1e-9)) for k, v in need.items() if v > 0)
    asked = p.config.max_concurrent
    if fits < 1 and not (asked and _ask_autoscaler(need, asked, fits, log)):
        raise ConfigError(f"one trial needs {_show(need)} (its own {_show(trial_resources(p))}"
                          + (", its pretraining workers and their data stream the rest" if p.space.groups else "")
                          + f"); the cluster has {_show(cluster, need)}: lower --cpus-per-trial"
                          + (" or pretraining num_workers / cpus_per_worker" if p.space.groups else "")
                          + ", or add nodes")
    if asked and asked > fits:
        if fits >= 1:
            _ask_autoscaler(need, asked, fits, log)
        return asked
    return min(asked, fits) if asked else fits


def _ask_autoscaler(need: dict[str, float], asked: int, fits: int, log: Log) -> bool:
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[need] * asked)
    except Exception as err:  # noqa: BLE001 - a cluster without an autoscaler runs what fits
        log(f"[tune] {asked} trials at once asked, the cluster holds {fits}; no autoscaler answered ({err})")
        return False
    log(f"[tune] {asked} trials at once asked; the cluster holds {fits} now ({_show(need)} each): asked the "
        "autoscaler for the rest (ray.autoscaler.sdk.request_resources); trials wait for nodes")
    return True


def _show(resources: dict[str, float], keys=None) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in (keys or resources))


# ---------------------------------------------------------------- the data every trial shares

def _pretraining_corpus(group: str, settings: dict, log: Log) -> str:
    """The prepared corpus of a pretraining method: given, or its job's demo corpus, prepared once."""
    from physiofm.data.loader import corpus_info
    from physiofm.data.pipeline import prepare_corpus
    from physiofm.platform import demo
    from physiofm.platform.cli import cache_dir
    from physiofm.platform.config import TrainConfig

    method_config = {"ecg": {"name": "masked_reconstruction", "modality": "ecg"},
                     "cbramod": {"name": "masked_reconstruction", "modality": "eeg"},
                     "scmm": {"name": "scmm", **{k: settings[k] for k in ("source", "target") if k in settings}},
                     "physiosync": {"name": "physiosync"}}[group]
    preset = TrainConfig.from_dict({"method": method_config}).method.default_preset
    uri = settings.get("corpus") or ""
    if uri:
        try:
            corpus_info(uri)
            return uri  # already prepared windows
        except FileNotFoundError:
            raw, prepared = uri, storage.join(uri.rstrip("/") + "-windows", preset)
    else:
        folder = cache_dir() / "demo" / f"sweep-{group}"
        writers = {"ecg": demo.ecg_demo_corpus, "cbramod": demo.eeg_demo_corpus,
                   "scmm": lambda f: demo.scmm_demo_corpus(settings.get("source", "seed"), f),
                   "physiosync": lambda f: demo.physiosync_demo_corpus(settings.get("dataset", "deap"), f)}
        raw, prepared = writers[group](folder / "raw"), str(folder / f"windows-{preset}")
        log(f"[tune] pretraining {group}: the embedded demo corpus in {folder}")
    log(f"[tune] pretraining {group}: windows with preset '{preset}' in {prepared} (once, for every trial)")
    prepare_corpus([raw], prepared, preset=preset, progress=lambda line: None)
    return prepared


def sweep_data(p: SweepPlan, log: Log = print):
    from physiofm.platform.finetune import prepare_protocol
    from physiofm.platform.sweep_trial import SweepData

    prepared = prepare_protocol(p.data_plan.config, checked=p.data_plan, log=log)
    arrays = prepared.fold_arrays()
    shared = dataclasses.replace(prepared, arrays={})
    corpora = {g: _pretraining_corpus(g, p.space.pretraining_settings(g), log) for g in p.space.groups}
    base = dataclasses.asdict(p.base)
    base["cpus_per_fold"], base["gpus_per_fold"] = p.config.cpus_per_trial, p.config.gpus_per_trial
    return SweepData(space=p.space, base=base, base_encoders=p.base_encoders, arrays=arrays, prepared=shared,
                     metric=p.metric, sweep_uri=p.sweep_uri, corpora=corpora, jobs_dir=str(REPO_ROOT / "jobs"),
                     threads=max(1, int(p.config.cpus_per_trial)),
                     device="cuda" if p.config.gpus_per_trial > 0 else "cpu"), prepared


# ---------------------------------------------------------------- Tune

def trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def progress_callback(total: int, metric: str, epochs: int, searched: list[str], log: Log = print):
    """A Tune callback printing one line per trial that starts, finishes (its validation metric,
    ASHA's decision, its values) or fails."""
    from ray.tune import Callback

    class SweepProgress(Callback):
        def __init__(self):
            self.finished = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            log(f"[tune] {trial_name(trial)} started: {_values(trial.config, searched)}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.finished += 1
            result = trial.last_result or {}
            value = result.get(metric, math.nan)
            epoch = int(result.get("epoch", 0))
            # over every trial Tune holds, so that a resumed sweep counts the trials it kept
            scored = [((t.last_result or {}).get(metric, math.nan), trial_name(t)) for t in trials
                      if t.status == "TERMINATED" or t is trial]
            best = max((v for v in scored if v[0] == v[0]), default=(math.nan, "-"))
            fate = "completed" if epoch >= epochs else f"stopped by ASHA at epoch {epoch}"
            running = sum(t.status == "RUNNING" for t in trials)
            log(f"[tune] {trial_name(trial)} finished ({self.finished} this run, {running} running, {total} in the "
                f"sweep): {metric} {value:.4f}, {fate}, {result.get('time_total_s', 0.0):.1f} s; best so far "
                f"{best[0]:.4f} ({best[1]}); {_values(trial.config, searched)}")

        def on_trial_error(self, iteration, trials, trial, **info):
            log(f"[tune] {trial_name(trial)} failed: see {trial.path}/error.txt")

    return SweepProgress()


def _values(config: dict, names: list[str]) -> str:
    return ", ".join(f"{n}={_fmt(config.get(n))}" for n in names)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def build_tuner(p: SweepPlan, data, max_concurrent: int, log: Log = print):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from physiofm.platform.optuna_resume import ResumableASHA, ResumableOptunaSearch
    from physiofm.platform.sweep_trial import run_trial

    cfg, space = p.config, p.space
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data), trial_resources(p))
    storage_path, filesystem = _tune_storage(cfg.storage)
    if Tune_can_restore(p.sweep_uri, filesystem):
        recorded = recorded_trials(p.sweep_uri)
        kept = sum(status == "TERMINATED" for status in recorded.values())
        staging = driver_staging_copies(p.sweep_uri)  # Tune reuses it on the cluster that ran the sweep
        set_aside = set_aside_cut_attempts(p.sweep_uri, recorded, staging)
        unrecorded = set_aside_unrecorded_trials(p.sweep_uri, recorded, staging)
        log(f"[tune] {p.sweep_uri} holds this sweep: resuming it; {kept} finished trials are kept, "
            f"{len(recorded) - kept} interrupted or failed ones run again, "
            f"{max(0, cfg.num_samples - len(recorded))} not yet started"
            + (f"; the logs of {len(set_aside)} cut attempts are kept in <trial>/{CUT_ATTEMPT}_N" if set_aside else "")
            + (f"; {len(unrecorded)} trials started after the last saved state are kept in {UNRECORDED}/"
               if unrecorded else ""))
        return tune.Tuner.restore(_tune_path(p.sweep_uri), trainable=trainable, resume_unfinished=True,
                                  resume_errored=False, restart_errored=True, storage_filesystem=filesystem), True
    if cfg.search == "optuna":
        startup = min(10, max(3, cfg.num_samples // 3))
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=startup, constant_liar=True)
        search = ResumableOptunaSearch(sampler=sampler, study_name=cfg.name,
                                       storage=optuna.storages.RDBStorage(p.study_url))
        log(f"[tune] Optuna TPE (seed {cfg.seed}, {startup} random trials first), study '{cfg.name}' in {p.study_url}")
    else:
        search = BasicVariantGenerator(random_state=cfg.seed)
    if cfg.scheduler == "asha":
        grace = min(space.asha.get("grace_period", 1), p.epochs)
        asha = dict(time_attr="epoch", max_t=p.epochs, grace_period=grace,
                    reduction_factor=space.asha.get("reduction_factor", 2))
        # with a study, a trial it finished before a resume re-runs to the same end (optuna_resume)
        scheduler = (ResumableASHA(study_url=p.study_url, study_name=cfg.name, **asha) if cfg.search == "optuna"
                     else ASHAScheduler(**asha))
    else:
        scheduler = FIFOScheduler()
    progress = progress_callback(cfg.num_samples, p.metric, p.epochs, space.searched, log)
    tuner = tune.Tuner(
        trainable, param_space=space.tune_param_space(),
        tune_config=tune.TuneConfig(metric=p.metric, mode="max", search_alg=search, scheduler=scheduler,
                                    num_samples=cfg.num_samples, max_concurrent_trials=max_concurrent,
                                    trial_name_creator=trial_name, trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(name=cfg.name, storage_path=storage_path, storage_filesystem=filesystem,
                                  verbose=0, log_to_file=True, callbacks=[progress],
                                  failure_config=tune.FailureConfig(max_failures=0)))
    return tuner, False


#: what Tune logs of one attempt of a trial (TensorBoard events, its results as JSON lines and CSV)
ATTEMPT_LOGS = ("events.out.tfevents.*", "result.json", "progress.csv")
CUT_ATTEMPT = "interrupted_attempt"


def set_aside_cut_attempts(sweep_uri: str, recorded: dict[str, str], staging: list[str] = ()) -> list[str]:
    """A resumed sweep runs its unfinished and failed trials again from their first epoch (a trial
    reports no checkpoint), and Tune appends the new attempt's logs to the old ones: one curve would
    show the cut attempt and the rerun over the same epochs. The cut attempt's logs move, first, to
    `<trial>/interrupted_attempt_N/` (TensorBoard shows it as a run of its own), in the sweep and in
    Tune's `staging` copies of it (`driver_staging_copies`); returns those folders of the sweep."""
    fs, path = storage.fsspec_filesystem(sweep_uri)
    copies = [(fs, path), *((fsspec_local(), root) for root in staging)]
    moved = []
    for trial_id, status in sorted(recorded.items()):
        if status == "TERMINATED":
            continue
        folders = [(cfs, f"{root}/trial_{trial_id}") for cfs, root in copies]
        logs = [(cfs, folder, sorted(f for pattern in ATTEMPT_LOGS for f in cfs.glob(f"{folder}/{pattern}")))
                for cfs, folder in folders]
        if not any(files for _, _, files in logs):  # never started
            continue
        # one number in every copy: Tune's upload of its copy then lands on the same folder of the sweep
        n = 1 + max(len(cfs.glob(f"{folder}/{CUT_ATTEMPT}_*")) for cfs, folder in folders)
        for cfs, folder, files in logs:
            target = f"{folder}/{CUT_ATTEMPT}_{n}"
            for file in files:
                cfs.makedirs(target, exist_ok=True)
                storage.retry(lambda f=file, c=cfs, t=target: c.mv(f, f"{t}/{f.rsplit('/', 1)[-1]}"),
                              what=f"set aside {file}")
        moved.append(f"{path}/trial_{trial_id}/{CUT_ATTEMPT}_{n}")
    return moved


#: where a resume moves the folders of trials that started after Tune last saved its state
UNRECORDED = "interrupted_unrecorded_trials"


def set_aside_unrecorded_trials(sweep_uri: str, recorded: dict[str, str], staging: list[str] = ()) -> list[str]:
    """A sweep killed just after a trial started leaves that trial's folder, but Tune's last saved state
    does not know the trial: the resumed sweep draws a new one in its place, and the old folder would
    stand beside the sweep's trials as one more (an empty TensorBoard run, no result). Such folders
    move, whole, to `UNRECORDED/`, in the sweep and in Tune's `staging` copies of it (which it would
    upload again); returns where they went in the sweep."""
    fs, path = storage.fsspec_filesystem(sweep_uri)
    copies = [(fs, path), *((fsspec_local(), root) for root in staging)]
    names = sorted({folder.rstrip("/").rsplit("/", 1)[-1] for cfs, root in copies
                    for folder in cfs.glob(f"{root}/trial_*") if cfs.isdir(folder)})
    moved = []
    for name in names:
        if name.removeprefix("trial_") in recorded:
            continue
        kept, n = name, 1
        while any(cfs.exists(f"{root}/{UNRECORDED}/{kept}") for cfs, root in copies):
            n += 1
            kept = f"{name}_{n}"
        for cfs, root in copies:
            if cfs.isdir(f"{root}/{name}"):
                cfs.makedirs(f"{root}/{UNRECORDED}", exist_ok=True)
                storage.retry(lambda c=cfs, f=f"{root}/{name}", t=f"{root}/{UNRECORDED}/{kept}": c.mv(f, t, recursive=True),
                              what=f"set aside {root}/{name}")
        moved.append(f"{path}/{UNRECORDED}/{kept}")
    return moved


def fsspec_local():
    import fsspec

    return fsspec.filesystem("file")


def driver_staging_copies(sweep_uri: str) -> list[str]:
    """Tune's working copies of this sweep on this node: its driver writes the trials' logs into
    `<Ray session>/artifacts/<start>/<name>/driver_artifacts/` and uploads them to the sweep from there.
    A resume on the cluster that ran the sweep reuses that copy (the restored trials keep it), so a cut
    attempt's logs there would be appended to and uploaded again. The copy is known by the newest
    saved state of the sweep, which it holds under the same name. [] when Ray runs no node here."""
    import ray

    fs, path = storage.fsspec_filesystem(sweep_uri)
    newest = _newest_state(fs, path)
    node = getattr(ray._private.worker, "_global_node", None)  # the driver's node, when connected
    if not newest or node is None:
        return []
    name = newest.rsplit("/", 1)[-1]
    experiment = path.rstrip("/").rsplit("/", 1)[-1]
    artifacts = Path(node.get_session_dir_path(), "artifacts")
    return sorted(str(state.parent) for state in artifacts.glob(f"*/{experiment}/driver_artifacts/{name}"))


def Tune_can_restore(sweep_uri: str, filesystem) -> bool:  # noqa: N802 - Tuner.can_restore for a URI of ours
    from ray import tune

    return tune.Tuner.can_restore(_tune_path(sweep_uri), storage_filesystem=filesystem)


def recorded_trials(sweep_uri: str) -> dict[str, str]:
    """{trial id: status} as the sweep's last saved experiment state records them ({} before the first)."""
    fs, path = storage.fsspec_filesystem(sweep_uri)
    newest = _newest_state(fs, path)
    if not newest:
        return {}
    document = json.loads(fs.cat_file(newest))
    out = {}
    for entry in document.get("trial_data", []):
        trial = json.loads(entry[0])
        out[trial["trial_id"]] = trial["status"]
    return out


def _newest_state(fs, path: str) -> str:
    """The sweep's last saved experiment state file ("" before the first)."""
    states = sorted(fs.glob(f"{path}/experiment_state-*.json")) if fs.exists(path) else []
    return states[-1] if states else ""


def _tune_storage(uri: str):
    uri = _absolute(uri)
    if storage.is_remote(uri):
        fs, path = storage.pyarrow_filesystem(uri, via_fsspec=True)
        return path, fs
    return uri, None


def _tune_path(sweep_uri: str) -> str:
    if storage.is_remote(sweep_uri):
        return storage.pyarrow_filesystem(sweep_uri, via_fsspec=True)[1]
    return sweep_uri


# ---------------------------------------------------------------- the run

@dataclass
class SweepOutcome:
    sweep_uri: str
    summary: dict[str, Any]
    written: list[str]


def run_sweep(config: SweepConfig, *, address: str | None = None, log: Log = print,
              checked: SweepPlan | None = None) -> SweepOutcome:
    import ray

    from physiofm.evaluation import sweep_report
    from physiofm.platform.trainer import connect_ray

    started = time.time()
    p = checked or plan_sweep(config)
    cfg = p.config
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        log(f"connecting to the Ray cluster at {address}" if address else "starting a local Ray")
        ray.init(address=address or "local", log_to_driver=False)  # trials log to their own files
    connect_ray(address, log)
    data, prepared = sweep_data(p, log)
    max_concurrent = concurrency(p, ray.cluster_resources(), log)
    log(f"[tune] {cfg.num_samples} trials of {len(prepared.folds)} folds x {p.epochs} epochs, {max_concurrent} at a "
        f"time ({_show(trial_footprint(p))} each), {cfg.search} search, {cfg.scheduler} scheduler on {p.metric}; "
        f"results in {p.sweep_uri}")
    tuner, resumed = build_tuner(p, data, max_concurrent, log)
    _open_session(p.sweep_uri, started, resumed)
    grid = tuner.fit()
    if cfg.max_concurrent:
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=[])  # the sweep no longer needs the nodes it asked for
        except Exception:  # noqa: BLE001
            pass
    trials = trial_table(grid, p)
    finished = [t for t in trials if t["status"] == "TERMINATED" and t["value"] is not None]
    if not finished:
        raise RuntimeError(f"no trial of {p.sweep_uri} finished; see the trials' error.txt")
    best = max(finished, key=lambda t: t["value"])
    best_cfg = best_config(p, best)
    test = None
    if cfg.evaluate_best:
        test = evaluate_best(p, best_cfg, log)
    sessions = _close_session(p.sweep_uri)
    summary = sweep_report.summarize(
        name=cfg.name, space=p.space, metric=p.metric, epochs=p.epochs, trials=trials, best=best,
        best_command=finetune_command(best_cfg, cfg.cpus_per_trial), test=test, sessions=sessions,
        settings={"search": cfg.search, "scheduler": cfg.scheduler, "seed": cfg.seed, "num_samples": cfg.num_samples,
                  "max_concurrent": max_concurrent, "study": p.study_url, "study_name": cfg.name,
                  "asha": {"grace_period": min(p.space.asha.get("grace_period", 1), p.epochs),
                           "reduction_factor": p.space.asha.get("reduction_factor", 2), "max_t": p.epochs}
                  if cfg.scheduler == "asha" else None,
                  "dataset": p.base.dataset, "protocol": p.base.protocol, "label": p.data_plan.scheme.name,
                  "folds": len(prepared.folds), "command": cfg.command, "sweep_uri": p.sweep_uri},
        top_k=cfg.top_k)
    written = sweep_report.write(summary, trials, storage.join(p.sweep_uri, "report"))
    if storage.is_remote(p.sweep_uri) and p.study_url.startswith("sqlite:///"):
        local = p.study_url[len("sqlite:///"):]
        storage.write_bytes(storage.join(p.sweep_uri, "optuna.db"), Path(local).read_bytes())
    return SweepOutcome(p.sweep_uri, summary, written)


def trial_table(grid, p: SweepPlan) -> list[dict[str, Any]]:
    """One row per trial: its values, last metric, epochs, where ASHA stopped it, its curve."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = dict(result.config or {})
        frame = result.metrics_dataframe
        curve = []
        if frame is not None and "epoch" in frame and p.metric in frame:
            rows_ft = frame[frame["phase"] == "finetuning"] if "phase" in frame else frame
            curve = [(int(e), float(v)) for e, v in zip(rows_ft["epoch"], rows_ft[p.metric]) if v == v]
        epoch = int(metrics.get("epoch", 0) or 0)
        value = metrics.get(p.metric)
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
        trial_id = metrics.get("trial_id") or Path(result.path).name.replace("trial_", "")
        rows.append({
            "trial": f"trial_{trial_id}", "trial_id": trial_id, "config": config,
            "status": "ERROR" if result.error else ("TERMINATED" if metrics.get("done") or epoch else "PENDING"),
            "value": value, "epoch": epoch, "stopped_early": bool(value is not None and epoch < p.epochs),
            "seconds": float(metrics.get("time_total_s", 0.0) or 0.0), "curve": curve,
            "validation": {k[len("validation_"):]: v for k, v in metrics.items()
                           if k.startswith("validation_") and not k.endswith("_at_epoch")},
            "path": result.path,
        })
    return sorted(rows, key=lambda r: r["trial"])


def best_config(p: SweepPlan, best: dict):
    """The FinetuneConfig of the best trial, with its pretrained encoders' exports."""
    from physiofm.platform.sweep_trial import trial_config
    from physiofm.platform.trainer import existing_checkpoints

    finetune_fields, _ = p.space.split(best["config"])
    inits = {}
    for group in p.space.groups:
        method = PRETRAININGS[group]
        run = storage.join(p.sweep_uri, "pretraining", best["trial_id"], group)
        last = existing_checkpoints(run)[-1]
        export = storage.join(run, last, "export")
        inits[group] = storage.join(export, method.export) if method.export else export
    data = _PlanView(p)
    cfg = trial_config(data, finetune_fields, inits)
    cfg.cpus_per_fold, cfg.gpus_per_fold = p.config.cpus_per_trial, p.config.gpus_per_trial
    return cfg


@dataclass
class _PlanView:
    """The fields of SweepData that `trial_config` reads, from the plan (no data needed)."""

    p: SweepPlan

    @property
    def base(self):
        return dataclasses.asdict(self.p.base)

    @property
    def space(self):
        return self.p.space

    @property
    def base_encoders(self):
        return self.p.base_encoders


def evaluate_best(p: SweepPlan, best_cfg, log: Log = print) -> dict[str, Any]:
    """The best configuration fine-tuned once more, now predicting its test folds (once: a resumed
    sweep whose best is unchanged reuses it). Writes the fine-tuning job's outputs under NAME/best/."""
    from physiofm.platform.finetune import run_protocol, write_outputs

    output = storage.join(p.sweep_uri, "best")
    cfg = dataclasses.replace(best_cfg, evaluate_test=True, save_models=True, output=output,
                              command=finetune_command(best_cfg, p.config.cpus_per_trial, output))
    metrics_uri = storage.join(output, "metrics.json")
    if storage.exists(metrics_uri):
        previous = json.loads(storage.read_bytes(metrics_uri))
        if previous.get("config", {}).get("command") == cfg.command:
            log(f"[tune] the best configuration's test metrics are already in {metrics_uri}")
            return previous
    log(f"[tune] the best configuration once more, now with its test folds (the only time they are predicted): "
        f"{cfg.command}")
    result = run_protocol(cfg, log=log)
    write_outputs(result, output, log)
    return result.document


def finetune_command(cfg, cpus: float = 1.0, output: str = "") -> str:
    """`python jobs/finetune_emotion.py ...` of a FinetuneConfig (every field that differs from the default)."""
    from physiofm.platform.finetune import FinetuneConfig

    default = FinetuneConfig()
    flags = {"dataset": "--dataset", "root": "--root", "protocol": "--protocol", "label": "--label",
             "modalities": "--modalities", "folds": "--folds", "source": "--source", "source_root": "--source-root",
             "adapt_fraction": "--adapt-fraction", "validation_fraction": "--validation-fraction",
             "window_s": "--window-s", "encoder": "--encoder", "init": "--init", "head": "--head",
             "pooling": "--pooling", "hidden_dims": "--hidden", "dropout": "--dropout", "epochs": "--epochs",
             "batch_size": "--batch-size", "lr": "--lr", "backbone_lr": "--backbone-lr",
             "weight_decay": "--weight-decay", "label_smoothing": "--label-smoothing",
             "selection_metric": "--selection-metric", "seed": "--seed", "prepared_cache": "--prepared-cache"}
    argv = ["python", "jobs/finetune_emotion.py"]
    for name, flag in flags.items():
        value = getattr(cfg, name)
        if value == getattr(default, name) or value in ("", ()):
            continue
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    for name, flag in (("freeze", "--freeze"), ("per_subject", "--per-subject")):
        if getattr(cfg, name):
            argv.append(flag)
    if cpus != default.cpus_per_fold:
        argv += ["--cpus-per-fold", repr(float(cpus))]
    if output:
        argv += ["--output", output]
    return " ".join(shlex.quote(a) for a in argv)


SESSIONS = "sweep-sessions.json"


def _open_session(sweep_uri: str, started: float, resumed: bool) -> None:
    """Record this run of the command before its trials start, so that a driver killed mid-sweep
    still counts; an earlier run that never closed (killed) ends at its last saved experiment state."""
    uri = storage.join(sweep_uri, SESSIONS)
    sessions = json.loads(storage.read_bytes(uri)) if storage.exists(uri) else []
    for session in sessions:
        if session.get("ended") is None:
            session["ended"] = max(session["started"], _last_state_time(sweep_uri) or session["started"])
            session["interrupted"] = True
    sessions.append({"started": started, "ended": None, "resumed": resumed})
    storage.write_bytes(uri, json.dumps(sessions, indent=1).encode())


def _close_session(sweep_uri: str) -> list[dict]:
    uri = storage.join(sweep_uri, SESSIONS)
    sessions = json.loads(storage.read_bytes(uri))
    sessions[-1]["ended"] = time.time()
    storage.write_bytes(uri, json.dumps(sessions, indent=1).encode())
    return sessions


def _last_state_time(sweep_uri: str) -> float | None:
    """When Tune last saved the sweep's experiment state (its newest experiment_state-*.json)."""
    try:
        fs, path = storage.fsspec_filesystem(sweep_uri)
        states = fs.glob(f"{path}/experiment_state-*.json")
        return max(fs.modified(f).timestamp() for f in states) if states else None
    except (OSError, NotImplementedError, ValueError):
        return None
