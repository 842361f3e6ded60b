"""A resumed sweep's trials that run again start from their first epoch: the cut attempt's logs are set
aside first, so each trial's TensorBoard curve and result files hold one attempt (no repeated epochs)."""
from __future__ import annotations

import json

from physiofm.platform.sweep import UNRECORDED, recorded_trials, set_aside_cut_attempts, set_aside_unrecorded_trials


def write_sweep(root, statuses: dict[str, str]) -> None:
    """A sweep folder as Tune leaves it: its experiment state, and each started trial's attempt logs."""
    root.mkdir(parents=True)
    state = {"trial_data": [[json.dumps({"trial_id": t, "status": s}), "{}"] for t, s in statuses.items()]}
    (root / "experiment_state-2026-12-02_10-00-00.json").write_text(json.dumps(state))
    for trial, status in statuses.items():
        if status == "PENDING":
            continue
        folder = root / f"trial_{trial}"
        folder.mkdir()
        (folder / "params.json").write_text("{}")
        (folder / "events.out.tfevents.1.host").write_bytes(b"attempt 1")
        (folder / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n')
        (folder / "progress.csv").write_text("epoch\n1\n2\n")


def test_a_resume_sets_aside_the_logs_of_cut_and_failed_attempts_and_keeps_finished_trials(tmp_path):
    sweep = tmp_path / "runs" / "demo"
    write_sweep(sweep, {"done": "TERMINATED", "cut": "RUNNING", "failed": "ERROR", "waiting": "PENDING"})
    recorded = recorded_trials(str(sweep))
    assert recorded == {"done": "TERMINATED", "cut": "RUNNING", "failed": "ERROR", "waiting": "PENDING"}

    moved = set_aside_cut_attempts(str(sweep), recorded)
    assert sorted(moved) == [f"{sweep}/trial_cut/interrupted_attempt_1", f"{sweep}/trial_failed/interrupted_attempt_1"]
    for trial in ("cut", "failed"):
        folder = sweep / f"trial_{trial}"
        assert sorted(p.name for p in folder.iterdir()) == ["interrupted_attempt_1", "params.json"]
        kept = folder / "interrupted_attempt_1"
        assert sorted(p.name for p in kept.iterdir()) == ["events.out.tfevents.1.host", "progress.csv", "result.json"]
        assert (kept / "result.json").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'  # moved whole, not rewritten
    assert len(list((sweep / "trial_done").iterdir())) == 4  # a finished trial is left as it is
    assert not (sweep / "trial_waiting").exists()

    # cut again on the next resume: a second folder beside the first, nothing overwritten
    (sweep / "trial_cut" / "result.json").write_text('{"epoch": 1}\n')
    assert set_aside_cut_attempts(str(sweep), recorded) == [f"{sweep}/trial_cut/interrupted_attempt_2"]
    assert (sweep / "trial_cut" / "interrupted_attempt_1" / "result.json").read_text().count("epoch") == 2
    assert (sweep / "trial_cut" / "interrupted_attempt_2" / "result.json").read_text() == '{"epoch": 1}\n'


def test_a_resume_moves_aside_the_folder_of_a_trial_its_saved_state_never_recorded(tmp_path):
    """Killed just after a trial started: its folder exists, the saved state does not know it, and the
    resumed sweep draws another trial instead. The old folder leaves the sweep's trial folders, whole."""
    sweep = tmp_path / "runs" / "demo"
    write_sweep(sweep, {"done": "TERMINATED", "cut": "RUNNING", "late": "RUNNING"})
    state = json.loads((sweep / "experiment_state-2026-12-02_10-00-00.json").read_text())
    state["trial_data"] = [entry for entry in state["trial_data"] if "late" not in entry[0]]  # saved before it began
    (sweep / "experiment_state-2026-12-02_10-00-00.json").write_text(json.dumps(state))
    recorded = recorded_trials(str(sweep))
    assert set(recorded) == {"done", "cut"}

    assert set_aside_unrecorded_trials(str(sweep), recorded) == [f"{sweep}/{UNRECORDED}/trial_late"]
    assert sorted(p.name for p in sweep.glob("trial_*")) == ["trial_cut", "trial_done"]  # the sweep's own trials
    late = sweep / UNRECORDED / "trial_late"
    assert sorted(p.name for p in late.iterdir()) == ["events.out.tfevents.1.host", "params.json", "progress.csv",
                                                      "result.json"]
    assert (late / "result.json").read_text() == '{"epoch": 1}\n{"epoch": 2}\n'  # moved whole, not rewritten
    assert set_aside_unrecorded_trials(str(sweep), recorded) == []  # nothing left to move

    (sweep / "trial_late").mkdir()  # the same name again on a later resume: kept beside the first
    assert set_aside_unrecorded_trials(str(sweep), recorded) == [f"{sweep}/{UNRECORDED}/trial_late_2"]
    assert (late / "result.json").exists()


def test_a_resume_on_the_cluster_that_ran_the_sweep_sets_aside_tunes_staging_copy_too(ray_local, tmp_path):
    """Seen in .ci/run: the sweep was killed after a trial's last epoch but before Tune uploaded its logs,
    so the sweep held that attempt as empty files while Tune's staging copy on the node held all 6 epochs.
    The resume reuses that copy (the restored trials keep it), appended the rerun's 4 epochs to it and
    uploaded the lot: 10 points on one curve and a result.json of two attempts. Both copies are set aside
    under the same names, so Tune's upload lands the cut attempt whole in the sweep's own folder for it."""
    import shutil
    import uuid
    from pathlib import Path

    from physiofm.platform.sweep import driver_staging_copies

    name = f"demo-{uuid.uuid4().hex[:8]}"
    sweep = tmp_path / "runs" / name
    write_sweep(sweep, {"done": "TERMINATED", "cut": "RUNNING"})
    (sweep / "trial_cut" / "result.json").write_text("")  # uploaded when the trial began, before any epoch
    (sweep / "trial_cut" / "events.out.tfevents.1.host").write_bytes(b"")
    artifacts = Path(ray_local._private.worker._global_node.get_session_dir_path()) / "artifacts"
    copy = artifacts / "2026-12-02_10-00-00" / name / "driver_artifacts"
    other = artifacts / "2026-12-02_11-00-00" / name / "driver_artifacts"  # another sweep of that name
    try:
        write_sweep(copy, {"done": "TERMINATED", "cut": "RUNNING", "late": "RUNNING"})  # all 2 epochs locally
        other.mkdir(parents=True)
        (other / "experiment_state-2026-12-02_11-00-00.json").write_text("{}")
        staging = driver_staging_copies(str(sweep))
        assert staging == [str(copy)]

        recorded = recorded_trials(str(sweep))
        assert set_aside_cut_attempts(str(sweep), recorded, staging) == [
            f"{sweep}/trial_cut/interrupted_attempt_1"]
        for root in (sweep, copy):
            assert sorted(p.name for p in (root / "trial_cut").iterdir()) == ["interrupted_attempt_1", "params.json"]
        assert (copy / "trial_cut" / "interrupted_attempt_1" / "result.json").read_text().count("epoch") == 2
        assert len(list((copy / "trial_done").iterdir())) == 4  # a finished trial is left as it is

        # a trial only the staging copy knows (started after the last upload) leaves it too
        assert set_aside_unrecorded_trials(str(sweep), recorded, staging) == [f"{sweep}/{UNRECORDED}/trial_late"]
        assert sorted(p.name for p in copy.glob("trial_*")) == ["trial_cut", "trial_done"]
        assert (copy / UNRECORDED / "trial_late" / "result.json").read_text().count("epoch") == 2
    finally:
        shutil.rmtree(artifacts / "2026-12-02_10-00-00", ignore_errors=True)
        shutil.rmtree(artifacts / "2026-12-02_11-00-00", ignore_errors=True)
