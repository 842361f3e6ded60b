"""Sweep parts without a cluster: search-space files and their errors, the shipped spaces, how a
trial's values reach the fine-tuning and pretraining jobs, folds run in turn (bit-identical to
alone), the best configuration's fine-tuning command, and the report."""
from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import numpy as np
import pytest

from physiofm.platform.search_space import PARAMETERS, SearchSpaceError, load, parse
from physiofm.platform.sweep import SweepConfig, finetune_command, plan_sweep
from tests.conftest import REPO_ROOT

SPACES = sorted((REPO_ROOT / "infra" / "tune").glob("*.yaml"))


def space(parameters, **sections):
    return parse({"parameters": parameters, **sections}, "test.yaml")


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_search_spaces_are_valid_and_their_trials_can_be_planned(path):
    checked = plan_sweep(SweepConfig(search_space=str(path)))
    assert checked.space.searched and checked.metric == "validation_kappa"
    names = set(checked.space.parameters)
    assert names <= set(PARAMETERS)


def test_the_shipped_spaces_search_every_dimension_of_the_issue():
    searched = set().union(*(load(p).searched for p in SPACES))
    for name in ("ecg.intra_ratio", "ecg.inter_ratio", "cbramod.mask_ratio", "scmm.mask_ratio", "scmm.alpha",
                 "scmm.sharpness", "scmm.tau", "physiosync.tau", "head", "hidden", "dropout", "lr"):
        assert name in searched, name
    heads = set().union(*(set(load(p).parameters["head"].values) for p in SPACES if "head" in load(p).parameters))
    assert {"concat", "gated", "late"} <= heads


@pytest.mark.parametrize("parameters, sections, expected", [
    ({"ecg.intra": {"uniform": [0.1, 0.5]}}, {}, ["unknown parameter 'ecg.intra'", "ecg.intra_ratio", "allowed"]),
    ({"lr": {"loguniform": [1e-2, 1e-3]}}, {}, ["'lr'", "empty range", "low must be < high"]),
    ({"hidden": {"int": [256, 32]}}, {}, ["'hidden'", "empty range"]),
    ({"head": {"choice": []}}, {}, ["'head'", "empty", "concat", "gated", "late"]),
    ({"ecg.intra_ratio": {"uniform": [0.3, 1.2]}}, {}, ["'ecg.intra_ratio'", "[0, 1)"]),
    ({"cbramod.mask_ratio": {"uniform": [-0.1, 0.5]}}, {}, ["'cbramod.mask_ratio'", "[0, 1)"]),
    ({"scmm.mask_ratio": {"choice": [0.5, 1.0]}}, {}, ["'scmm.mask_ratio'", "1.0", "[0, 1)"]),
    ({"dropout": 1.0}, {}, ["'dropout'", "[0, 1)"]),
    ({"head": {"choice": ["concat", "mlp"]}}, {}, ["'head'", "'mlp'", "concat", "late"]),
    ({"lr": {"normal": [0, 1]}}, {}, ["'lr'", "uniform", "loguniform", "choice"]),
    ({"scmm.tau": {"loguniform": [0.0, 1.0]}}, {}, ["'scmm.tau'", "low > 0"]),
    ({"lr": 1e-3}, {}, ["no parameter is searched"]),
    ({"lr": {"uniform": [1e-4, 1e-2]}}, {"pretraining": {"bert": {}}}, ["'bert'", "ecg", "scmm", "physiosync"]),
    ({"lr": {"uniform": [1e-4, 1e-2]}}, {"pretraining": {"ecg": {"steps": 4}}}, ["pretraining.ecg.steps", "max_steps"]),
    ({"lr": {"uniform": [1e-4, 1e-2]}}, {"finetune": {"epoch": 3}}, ["finetune.epoch", "epochs"]),
    ({"lr": {"uniform": [1e-4, 1e-2]}}, {"finetune": {"output": "x"}}, ["finetune.output", "set by the sweep"]),
    ({"scmm.tau": {"uniform": [0.1, 0.5]}, "ecg.inter_ratio": {"uniform": [0.1, 0.5]}}, {},
     ["cannot share a trial", "scmm"]),
])
def test_an_invalid_search_space_fails_naming_the_parameter_and_what_is_allowed(parameters, sections, expected):
    with pytest.raises(SearchSpaceError) as error:
        space(parameters, **sections)
    for text in expected:
        assert text in str(error.value), (text, str(error.value))


def test_unknown_top_level_keys_and_combinations_the_fine_tuning_refuses_fail_before_any_trial(tmp_path):
    with pytest.raises(SearchSpaceError, match=r"unknown key 'parameter'.*allowed keys"):
        parse({"parameter": {"lr": 1e-3}}, "x.yaml")
    bad = tmp_path / "gated.yaml"
    bad.write_text("parameters:\n  head: {choice: [concat, gated]}\n")
    with pytest.raises(SearchSpaceError, match=r"parameter 'head' value 'gated'.*PhysioSync"):
        plan_sweep(SweepConfig(search_space=str(bad)))
    no_ecg = tmp_path / "deap-ecg.yaml"
    no_ecg.write_text("finetune: {dataset: deap}\nparameters:\n  ecg.intra_ratio: {uniform: [0.2, 0.6]}\n")
    with pytest.raises(SearchSpaceError, match=r"pretraining 'ecg' encodes \['ecg'\].*reads \['eeg', 'peripheral'\]"):
        plan_sweep(SweepConfig(search_space=str(no_ecg)))
    with pytest.raises(SearchSpaceError, match="no such file"):
        plan_sweep(SweepConfig(search_space=str(tmp_path / "missing.yaml")))
    with pytest.raises(Exception, match=r"--scheduler 'hyperband'.*asha"):
        plan_sweep(SweepConfig(scheduler="hyperband"))


def test_the_sweep_job_refuses_an_invalid_space_before_ray_or_any_trial(tmp_path, capsys, monkeypatch):
    import ray

    job = _job("tune_emotion")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parameters:\n  ecg.inter_ratio: {uniform: [0.2, 1.0]}\n  head: {choice: [concat]}\n")
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started for an invalid search space"))
    code = job.main(["--search-space", str(bad), "--storage", str(tmp_path / "runs"), "--name", "bad"])
    err = capsys.readouterr().err
    assert code == 2 and "'ecg.inter_ratio'" in err and "[0, 1)" in err, err
    assert not (tmp_path / "runs").exists()  # nothing written: no trial, no study


def test_a_trial_s_values_reach_the_fine_tuning_and_its_pretraining_job(tmp_path):
    from physiofm.platform.sweep_trial import pretraining_argv, trial_config, wire_encoders

    checked = plan_sweep(SweepConfig(search_space=str(REPO_ROOT / "infra/tune/eeg-ecg-fusion.yaml")))
    values = {"cbramod.mask_ratio": 0.4, "ecg.intra_ratio": 0.6, "ecg.inter_ratio": 0.1, "head": "late",
              "hidden": 64, "dropout": 0.2, "lr": 1e-3}
    finetune, methods = checked.space.split(values)
    assert finetune == {"head": "late", "hidden_dims": (64,), "dropout": 0.2, "lr": 1e-3}
    assert methods == {"cbramod": {"intra_ratio": 0.4}, "ecg": {"intra_ratio": 0.6, "inter_ratio": 0.1}}
    assert checked.space.groups == ["ecg", "cbramod"]
    encoder, init = wire_encoders(checked.base_encoders, checked.space.groups, {"ecg": "E.pt", "cbramod": "C.pt"})
    assert encoder == "eeg=cbramod,ecg=ecg" and init == "ecg=E.pt,eeg=C.pt"

    class View:
        space, base_encoders = checked.space, checked.base_encoders
        base = dict(vars(checked.base))

    cfg = trial_config(View, finetune, {"ecg": "E.pt", "cbramod": "C.pt"})
    assert (cfg.encoder, cfg.init, cfg.head, cfg.freeze, cfg.evaluate_test) == ("eeg=cbramod,ecg=ecg",
                                                                               "ecg=E.pt,eeg=C.pt", "late", True, False)
    argv = pretraining_argv("ecg", checked.space.pretraining_settings("ecg"), "t.yaml", "OUT", "CORPUS")
    job = _job("pretrain_ecg")
    args = job.parser().parse_args(argv)
    assert (args.config, args.output, args.name, args.corpus, args.max_steps, args.checkpoint_every,
            args.batch_size, args.num_workers) == ("t.yaml", "OUT", "ecg", "CORPUS", 12, 12, 4, 1)


def _job(name):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO_ROOT / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_best_configuration_s_command_parses_back_to_the_same_fine_tuning():
    from physiofm.platform.finetune import FinetuneConfig

    job = _job("finetune_emotion")
    cfg = FinetuneConfig(dataset="dreamer", label="arousal", encoder="eeg=spectral,ecg=ecg", init="ecg=/x/e.pt",
                         head="late", hidden_dims=(64,), dropout=0.21879360563134626, lr=0.006074996073425695,
                         epochs=7, freeze=True, cpus_per_fold=2.0, prepared_cache="/c")
    argv = shlex.split(finetune_command(cfg, cpus=2.0, output="/o"))[2:]
    again = job.config_from_args(job.parser().parse_args(argv), argv)
    for field in ("dataset", "label", "encoder", "init", "head", "hidden_dims", "dropout", "lr", "epochs", "freeze",
                  "cpus_per_fold", "prepared_cache", "protocol", "seed", "output"):
        assert getattr(again, field) == getattr(cfg, field) or field == "output", field
    assert again.output == "/o"


def test_folds_run_in_turn_train_exactly_as_each_fold_alone(one_torch_thread):
    from physiofm.platform.config import DataConfig, OptimConfig, RunConfig, TrainConfig
    from physiofm.platform.fold import fit_fold
    from physiofm.platform.methods import SupervisedMethodConfig
    from physiofm.platform.sweep_trial import fit_folds_in_turn

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 48)
    eeg = rng.standard_normal((48, 3, 2, 200)).astype(np.float32)
    eeg[:, 0] *= (1 + y)[:, None, None]
    arrays = {"eeg": eeg, "y": y}
    method = SupervisedMethodConfig(encoders={"eeg": "spectral"}, shapes={"eeg": (3, 2, 200)}, dropout=0.3)
    cfg = TrainConfig(method=method, data=DataConfig(batch_size=8), optim=OptimConfig(lr=3e-3, min_lr=0.0),
                      run=RunConfig(seed=3))
    tasks = []
    for k in range(3):
        order = np.roll(np.arange(48), 16 * k)
        tasks.append({"train_config": cfg.to_dict(), "epochs": 3, "evaluate_test": False, "save_model": False,
                      "fold": {"name": f"fold {k}", "index": k, "train": order[:32], "validation": order[32:40],
                               "test": order[40:]}})
    alone = [fit_fold(task, arrays) for task in tasks]
    seen = []
    together = fit_folds_in_turn(tasks, arrays, None, 1, lambda epoch, points: seen.append((epoch, len(points))))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a["validation_prob"], b["validation_prob"])
        assert a["curve"] == b["curve"] and a["best_epoch"] == b["best_epoch"] and "test_prob" not in b


def test_a_failing_fold_stops_the_others_and_names_itself(one_torch_thread):
    from physiofm.platform.sweep_trial import fit_folds_in_turn

    bad = {"train_config": {}, "epochs": 1, "fold": {"name": "fold 9", "index": 9, "train": [], "validation": [],
                                                      "test": []}}
    with pytest.raises(RuntimeError, match="fold 9 failed"):
        fit_folds_in_turn([bad, bad], {"y": np.zeros(2)}, None, 1, lambda e, p: None)


def test_the_report_names_the_best_configuration_and_the_stops(tmp_path):
    from physiofm.evaluation import sweep_report

    checked = plan_sweep(SweepConfig())
    trials = [{"trial": f"trial_{i}", "config": {"head": "late" if i % 2 else "concat", "hidden": 32 * (i + 1),
                                                 "dropout": 0.1 * i, "lr": 1e-3 * (i + 1)},
               "status": "TERMINATED", "value": v, "epoch": e, "stopped_early": e < 12, "seconds": 3.0,
               "curve": [(k, v * k / e) for k in range(1, e + 1)], "validation": {"kappa": v}}
              for i, (v, e) in enumerate([(0.41, 12), (0.12, 2), (0.35, 4), (0.44, 12)])]
    summary = sweep_report.summarize(name="demo", space=checked.space, metric="validation_kappa", epochs=12,
                                     trials=trials, best=trials[3], best_command="python jobs/finetune_emotion.py",
                                     test={"mean": {"balanced_accuracy": 0.7, "kappa": 0.4}, "std": {}, "chance": {},
                                           "validation": {"kappa": 0.44}},
                                     sessions=[{"started": 0, "ended": 90, "resumed": False}],
                                     settings={"dataset": "dreamer", "label": "valence", "protocol": "loso",
                                               "folds": 6, "search": "optuna", "seed": 0, "study": "sqlite:///x",
                                               "study_name": "demo", "max_concurrent": 2,
                                               "asha": {"grace_period": 2, "reduction_factor": 2, "max_t": 12}})
    written = sweep_report.write(summary, trials, str(tmp_path))
    text = (tmp_path / "summary.md").read_text()
    assert "**trial_3**" in text and "**0.4400**" in text and "stopped 1 at epoch 2, 1 at epoch 4" in text
    assert summary["trials"]["stopped_early"] == 2 and summary["trial_hours"] == pytest.approx(12 / 3600)
    assert sorted(Path(w).name for w in written if w.endswith(".png")) == [
        "learning_curves.png", "metric_vs_parameters.png", "parallel_coordinates.png"]
    assert all((tmp_path / n).read_bytes()[:4] == b"\x89PNG" for n in ("learning_curves.png",))


def test_progress_lines_count_the_trials_a_resumed_sweep_kept():
    from types import SimpleNamespace

    from physiofm.platform.sweep import progress_callback

    lines = []
    progress = progress_callback(6, "validation_kappa", 8, ["head"], log=lines.append)
    kept = SimpleNamespace(trial_id="k", status="TERMINATED", last_result={"validation_kappa": 0.5, "epoch": 8},
                           config={"head": "late"}, path="/k")
    now = SimpleNamespace(trial_id="n", status="RUNNING", config={"head": "concat"}, path="/n",
                          last_result={"validation_kappa": 0.25, "epoch": 2, "time_total_s": 3.0})
    progress.on_trial_start(0, [kept, now], now)
    progress.on_trial_complete(0, [kept, now], now)
    assert lines[0] == "[tune] trial_n started: head=concat"
    assert "validation_kappa 0.2500, stopped by ASHA at epoch 2" in lines[1], lines[1]
    assert "best so far 0.5000 (trial_k)" in lines[1] and "(1 this run, 1 running, 6 in the sweep)" in lines[1], lines[1]


def test_trials_at_once_leave_room_for_their_pretraining_workers_and_follow_the_cluster():
    from physiofm.platform.config import ConfigError
    from physiofm.platform.sweep import concurrency, trial_footprint, trial_resources

    heads = plan_sweep(SweepConfig(cpus_per_trial=2.0))
    assert trial_resources(heads) == trial_footprint(heads) == {"CPU": 2.0}
    assert concurrency(heads, {"CPU": 16.0}) == 8 and concurrency(heads, {"CPU": 5.0}) == 2
    heads.config.max_concurrent = 1
    assert concurrency(heads, {"CPU": 16.0}) == 1
    fusion = plan_sweep(SweepConfig(search_space=str(REPO_ROOT / "infra" / "tune" / "eeg-ecg-fusion.yaml"),
                                    gpus_per_trial=1.0))
    # Tune reserves the trial's own CPU; Ray Train schedules the pretraining worker (1 CPU) and
    # its data stream (1 CPU) beside it: 16 CPUs hold 5 such trials, not 16 reservations that
    # would leave the workers nothing (the trials would wait for their workers forever)
    assert trial_resources(fusion) == {"CPU": 1.0, "GPU": 1.0}
    assert trial_footprint(fusion) == {"CPU": 3.0, "GPU": 1.0}
    assert concurrency(fusion, {"CPU": 16.0, "GPU": 8.0}) == 5 and concurrency(fusion, {"CPU": 64.0, "GPU": 4.0}) == 4
    with pytest.raises(ConfigError, match=r"one trial needs 3 CPU, 1 GPU \(its own 1 CPU, 1 GPU, its pretraining "
                                          r"workers.*the cluster has 2 CPU, 1 GPU.*cpus_per_worker"):
        concurrency(fusion, {"CPU": 2.0, "GPU": 1.0})
    lines = []
    fusion.config.max_concurrent = 6  # more than fits: the autoscaler is asked for the rest
    assert concurrency(fusion, {"CPU": 64.0, "GPU": 4.0}, log=lines.append) == 6
    assert "6 trials at once asked" in lines[0] and "the cluster holds 4" in lines[0], lines


def test_a_resumed_sweep_re_runs_a_trial_its_optuna_study_already_finished(tmp_path):
    """The study (RDB) is written at once, Tune's state every few seconds: a trial told just before
    the driver died runs again after the resume, and its reports must not stop the sweep."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from physiofm.platform.optuna_resume import ResumableOptunaSearch

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    result = {"validation_kappa": 0.5, "training_iteration": 1}
    for cls in (OptunaSearch, ResumableOptunaSearch):
        name = cls.__name__
        search = cls(space={"lr": tune.loguniform(1e-4, 1e-2)}, metric="validation_kappa", mode="max",
                     sampler=optuna.samplers.TPESampler(seed=0), study_name=name,
                     storage=optuna.storages.RDBStorage(url))
        search.suggest("t1")
        optuna.load_study(study_name=name, storage=url).tell(0, 0.5)  # told before the driver was killed
        if cls is OptunaSearch:
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                search.on_trial_result("t1", result)
            continue
        search.on_trial_result("t1", result)
        search.on_trial_complete("t1", result)
    assert [t.value for t in optuna.load_study(study_name="ResumableOptunaSearch", storage=url).trials] == [0.5]


def test_a_trial_the_study_finished_before_a_resume_re_runs_to_where_it_ended_whatever_asha_says(tmp_path):
    """Seen in .ci/run: killed just after a trial completed its 6 epochs (complete in the study, running in
    Tune's saved state), the resumed sweep ran it again and the fresh ASHA stopped the re-run at epoch 4:
    the report's value for it (epoch 4) and the study's (epoch 6) differed. The re-run now ends where the
    study says the earlier attempt ended; a trial the study never finished is ASHA's as before."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from physiofm.platform.optuna_resume import TUNE_TRIAL_ID, ResumableASHA, ResumableOptunaSearch

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = ResumableOptunaSearch(space={"lr": tune.loguniform(1e-4, 1e-2)}, metric="validation_kappa", mode="max",
                                   sampler=optuna.samplers.TPESampler(seed=0), study_name="demo",
                                   storage=optuna.storages.RDBStorage(url))
    for trial_id, epochs in (("ran_to_the_end", 6), ("stopped_at_2", 2)):  # the killed driver's session
        search.suggest(trial_id)
        for epoch in range(1, epochs + 1):
            search.on_trial_result(trial_id, {"validation_kappa": 0.1 * epoch, "training_iteration": epoch})
        search.on_trial_complete(trial_id, {"validation_kappa": 0.1 * epochs, "training_iteration": epochs})
    search.suggest("never_finished")
    study = optuna.load_study(study_name="demo", storage=url)
    assert [t.user_attrs[TUNE_TRIAL_ID] for t in study.trials] == ["ran_to_the_end", "stopped_at_2", "never_finished"]

    class Trial:  # what a scheduler reads of a trial
        def __init__(self, trial_id):
            self.trial_id = trial_id

    def decisions(scheduler, trial_id: str, epochs: int) -> list[str]:
        """The resumed session: a strong trial reports first, then `trial_id` re-runs from epoch 1."""
        scheduler.set_search_properties("validation_kappa", "max")
        strong, rerun = Trial("strong"), Trial(trial_id)
        for t in (strong, rerun):
            scheduler.on_trial_add(None, t)
        for epoch in range(1, 7):
            scheduler.on_trial_result(None, strong, {"validation_kappa": 0.9, "epoch": epoch, "training_iteration": epoch})
        out = []
        for epoch in range(1, epochs + 1):
            out.append(scheduler.on_trial_result(None, rerun, {"validation_kappa": 0.1 * epoch, "epoch": epoch,
                                                                "training_iteration": epoch}))
            if out[-1] == TrialScheduler.STOP:
                break
        return out

    asha = dict(time_attr="epoch", max_t=6, grace_period=1, reduction_factor=2)
    assert decisions(ASHAScheduler(**asha), "ran_to_the_end", 6) == [TrialScheduler.STOP]  # cut at epoch 1
    assert decisions(ResumableASHA(study_url=url, study_name="demo", **asha), "ran_to_the_end", 6) == [
        TrialScheduler.CONTINUE] * 5 + [TrialScheduler.STOP]
    assert decisions(ResumableASHA(study_url=url, study_name="demo", **asha), "stopped_at_2", 6) == [
        TrialScheduler.CONTINUE, TrialScheduler.STOP]
    assert decisions(ResumableASHA(study_url=url, study_name="demo", **asha), "never_finished", 6) == [
        TrialScheduler.STOP]  # ASHA's own call
    assert decisions(ResumableASHA(study_url=f"sqlite:///{tmp_path / 'none.db'}", study_name="demo", **asha),
                     "ran_to_the_end", 6) == [TrialScheduler.STOP]  # no study yet: ASHA alone
