"""Ray Tune's OptunaSearch for a sweep that resumes after its driver was killed.

The Optuna study lives in an RDB storage and is written at once, while Tune saves its own
experiment state every few seconds: a trial that finished just before the kill is complete in the
study but interrupted in Tune's state, so the resumed sweep runs it again, and Optuna refuses its
reports (`UpdateFinishedTrialError`), which stopped the whole sweep. The study already holds that
trial's value (a trial is seeded: its re-run reports the same numbers), so the re-run's reports are
not sent again; the completion was already tolerated by OptunaSearch itself.
"""
from __future__ import annotations

from optuna.exceptions import UpdateFinishedTrialError
from ray.tune.search.optuna import OptunaSearch


class ResumableOptunaSearch(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass  # finished in the study before the previous driver died
