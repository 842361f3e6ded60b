"""Ray Tune's OptunaSearch and ASHA for a sweep that resumes after its driver was killed.

The Optuna study lives in an RDB storage and is written at once, while Tune saves its own
experiment state every few seconds: a trial that finished just before the kill is complete in the
study but interrupted in Tune's state, so the resumed sweep runs it again.
- Optuna refuses the re-run's reports (`UpdateFinishedTrialError`), which stopped the whole sweep.
  The study already holds that trial's value, so the re-run's reports are not sent again; the
  completion was already tolerated by OptunaSearch itself.
- A trial is seeded, so its re-run reports the same numbers epoch by epoch; but ASHA starts afresh
  on a resume (Tune restores it as it was built), so it could stop the re-run at another epoch and
  the sweep's value for that trial would differ from the study's. The re-run therefore ends where
  its earlier attempt ended in the study (`ResumableASHA`), whatever ASHA decides this time.
Each study trial carries the id of its Tune trial (`TUNE_TRIAL_ID`) to tell which is which.
"""
from __future__ import annotations

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

TUNE_TRIAL_ID = "tune_trial_id"  # user attribute of a study trial: the Tune trial it was asked for


class ResumableOptunaSearch(OptunaSearch):
    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        asked = self._ot_trials.get(trial_id)
        if asked is not None and TUNE_TRIAL_ID not in asked.user_attrs:
            asked.set_user_attr(TUNE_TRIAL_ID, trial_id)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass  # finished in the study before the previous driver died


def finished_in_study(study_url: str, study_name: str) -> dict[str, int]:
    """{Tune trial id: the last step (training_iteration) it reported} of the study's complete trials;
    {} when the study does not exist yet."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=study_url)
    except KeyError:  # no such study: nothing finished
        return {}
    return {t.user_attrs[TUNE_TRIAL_ID]: max(t.intermediate_values, default=0)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if TUNE_TRIAL_ID in t.user_attrs}


class ResumableASHA(ASHAScheduler):
    """ASHA that lets a trial finished in the Optuna study before a resume end its re-run where its
    earlier attempt ended (see the module's docstring); every other trial is ASHA's to stop."""

    def __init__(self, *, study_url: str, study_name: str, **asha):
        super().__init__(**asha)
        self._study = (study_url, study_name)
        self._earlier: dict[str, int] | None = None  # read on this driver's first result

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if self._earlier is None:  # before any trial of this session can finish: the earlier sessions' ones
            self._earlier = finished_in_study(*self._study)
        ended_at = self._earlier.get(trial.trial_id)
        if ended_at is None or "training_iteration" not in result:
            return action
        return TrialScheduler.STOP if result["training_iteration"] >= ended_at else TrialScheduler.CONTINUE
