"""Checkpoints that recover: manifests written last, a resume from the newest complete checkpoint
with Ray's run snapshot kept consistent, private scratch folders. Unit tests build run folders as
Ray Train and the loop write them; one slow test truncates a real checkpoint and resumes."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

import fsspec
import pytest

from physiofm.platform.checkpoints import (SNAPSHOT_NAME, CheckpointDamaged, recover_run, verify, verify_local,
                                           write_manifest)
from physiofm.platform.train_loop import private_scratch
from physiofm.platform.trainer import tensorboard_locations

LOCAL = fsspec.filesystem("file")


def ray_snapshot(names: list[str]) -> str:
    """The run snapshot Ray Train 2.60 writes after reporting `names`, by its own model."""
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import (_CheckpointManagerState,
                                                                                 _TrainingResultState)

    results = [_TrainingResultState(checkpoint_dir_name=n, metrics={"global_step": int(n[5:])}) for n in names]
    return _CheckpointManagerState(
        checkpoint_results=results, checkpoint_report_indices=[2 * k + 1 for k in range(len(names))],
        latest_checkpoint_result=results[-1], pending_training_results=[], pending_validation_specs=[],
        current_report_index=2 * len(names), validated_checkpoint_dir_names=[],
        timed_out_validation_checkpoint_dir_names=[], failed_validation_checkpoint_dir_names=[]).json()


def parsed_snapshot(run: Path):
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import _CheckpointManagerState

    return _CheckpointManagerState.parse_obj(json.loads((run / SNAPSHOT_NAME).read_text()))


def write_checkpoint(run: Path, step: int, world: int = 2, ranks: tuple[int, ...] | None = None) -> Path:
    """A checkpoint as two ranks upload it: DeepSpeed's files per rank, rank 0's export and metrics."""
    folder = run / f"step_{step:08d}"
    for rank in ranks if ranks is not None else range(world):
        scratch = Path(tempfile.mkdtemp())
        (scratch / "state").mkdir()
        (scratch / "state" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").write_bytes(os.urandom(3000))
        if rank == 0:
            (scratch / "state" / "mp_rank_00_model_states.pt").write_bytes(os.urandom(5000))
            (scratch / "metrics.json").write_text(json.dumps({"global_step": step}))
        write_manifest(scratch, rank, world, step)
        LOCAL.put(str(scratch) + "/", str(folder), recursive=True)
    return folder


def run_folder(tmp_path: Path, steps=(2, 4)) -> Path:
    run = tmp_path / "run"
    for step in steps:
        write_checkpoint(run, step)
    (run / SNAPSHOT_NAME).write_text(ray_snapshot([f"step_{s:08d}" for s in steps]))
    return run


def test_a_checkpoint_is_verified_against_the_manifests_of_every_rank(tmp_path):
    folder = write_checkpoint(tmp_path, 4)
    assert verify(LOCAL, str(folder)) == ""
    model = folder / "state" / "mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:4096])  # a truncated upload
    assert verify(LOCAL, str(folder)) == ("file state/mp_rank_00_model_states.pt holds 4096 bytes, its manifest says "
                                          "5000 (truncated?)")
    with pytest.raises(CheckpointDamaged, match=r"^physiofm: damaged checkpoint .*mp_rank_00_model_states.pt holds 4096"):
        verify_local(folder)
    flipped = write_checkpoint(tmp_path, 6)
    optim = flipped / "state" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(optim.read_bytes())
    data[10] ^= 1
    optim.write_bytes(bytes(data))
    assert "does not match its checksum" in verify(LOCAL, str(flipped))
    half = write_checkpoint(tmp_path, 8, ranks=(0,))  # rank 1 never finished writing
    assert verify(LOCAL, str(half)).startswith("incomplete: the manifest(s) of rank(s) [1] of 2 are missing")
    legacy = tmp_path / "step_00000010"  # an earlier version's: no manifests
    (legacy / "state").mkdir(parents=True)
    (legacy / "metrics.json").write_text("{}")
    assert verify(LOCAL, str(legacy)) == "incomplete: it holds no DeepSpeed model states"
    (legacy / "state" / "mp_rank_00_model_states.pt").write_bytes(b"x" * 100)
    assert verify(LOCAL, str(legacy)) == "unverified"
    assert verify(LOCAL, str(legacy), manifests_expected=True).startswith("incomplete: no manifest of any rank")


def test_a_resume_skips_a_damaged_newest_checkpoint_and_keeps_rays_snapshot_consistent(tmp_path):
    run = run_folder(tmp_path, steps=(2, 4, 6))
    model = run / "step_00000006" / "state" / "mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:100])
    (run / "step_00000004" / "physiofm-checkpoint-rank1.json").unlink()  # incomplete too
    lines: list[str] = []
    recovery = recover_run(LOCAL, str(run), lines.append)
    assert recovery.resume_from == "step_00000002"
    assert [name for name, _ in recovery.skipped] == ["step_00000006", "step_00000004"]
    assert any("checkpoint step_00000006 skipped: file state/mp_rank_00_model_states.pt holds 100 bytes" in line
               for line in lines), lines
    assert "resuming from step_00000002 instead of step_00000006" in lines
    assert sorted(p.name for p in (run / "set_aside").iterdir()) == ["step_00000004", "step_00000006"]
    snapshot = parsed_snapshot(run)  # Ray's own model reads it: it would restore step 2, and nothing gone
    assert snapshot.latest_checkpoint_result.checkpoint_dir_name == "step_00000002"
    assert [r.checkpoint_dir_name for r in snapshot.checkpoint_results] == ["step_00000002"]
    assert snapshot.checkpoint_report_indices == [1] and snapshot.current_report_index == 6
    assert recover_run(LOCAL, str(run), lines.append).skipped == []  # verified: nothing more to do


def test_a_run_whose_snapshot_is_damaged_or_names_a_deleted_checkpoint_still_resumes(tmp_path):
    run = run_folder(tmp_path, steps=(2, 4))
    (run / SNAPSHOT_NAME).write_text((run / SNAPSHOT_NAME).read_text()[:40])  # cut short by a crash
    recovery = recover_run(LOCAL, str(run), lambda line: None)
    assert recovery.rebuilt_snapshot and recovery.resume_from == "step_00000004"
    assert [r.checkpoint_dir_name for r in parsed_snapshot(run).checkpoint_results] == ["step_00000002",
                                                                                           "step_00000004"]
    LOCAL.rm(str(run / "step_00000002"), recursive=True)  # deleted by hand
    lines: list[str] = []
    assert recover_run(LOCAL, str(run), lines.append).resume_from == "step_00000004"
    assert [r.checkpoint_dir_name for r in parsed_snapshot(run).checkpoint_results] == ["step_00000004"]
    assert any("step_00000002 of the run snapshot is missing" in line for line in lines)


def test_scratch_folders_are_private_to_the_run(tmp_path):
    first, second = private_scratch("tensorboard-pretrain"), private_scratch("tensorboard-pretrain")
    try:
        assert first != second and Path(first).parent == Path(tempfile.gettempdir())
        assert stat.S_IMODE(os.stat(first).st_mode) == 0o700
    finally:
        os.rmdir(first)
        os.rmdir(second)
    assert tensorboard_locations("s3://bucket/runs", "pretrain") == ("", "s3://bucket/runs/pretrain/tensorboard")
    local = str(tmp_path / "runs" / "pretrain" / "tensorboard")
    assert tensorboard_locations(str(tmp_path / "runs"), "pretrain") == (local, local)


@pytest.mark.slow
def test_a_run_whose_newest_checkpoints_are_truncated_resumes_from_the_one_before_and_finishes(ecg_corpus, tmp_path):
    """Step 6 truncated while the run is stopped (found at the start), step 4 truncated after that
    check (found when Ray restores it): the run resumes from step 2 and finishes."""
    from physiofm.platform.config import TrainConfig
    from physiofm.platform.trainer import pretrain

    config = {
        "method": {"name": "masked_reconstruction", "modality": "ecg", "encoder": {"n_layer": 1, "dim_feedforward": 64}},
        "data": {"corpus": ecg_corpus, "batch_size": 2},
        "run": {"name": "truncated", "storage": str(tmp_path / "runs"), "max_steps": 6, "checkpoint_every": 2,
                "zero_stage": 0, "log_every": 2, "keep_checkpoints": 3, "max_failures": 0},
        "scaling": {"num_workers": 1}}
    assert pretrain(TrainConfig.from_dict(config), log=lambda line: None).global_step == 6
    run = tmp_path / "runs" / "truncated"

    def truncate(step: int) -> None:
        model = run / f"step_{step:08d}" / "state" / "mp_rank_00_model_states.pt"
        model.write_bytes(model.read_bytes()[:4096])

    truncate(6)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("training masked_reconstruction"):  # verified, not yet restored by Ray
            truncate(4)

    second = pretrain(TrainConfig.from_dict(config), log=log)
    assert second.start_step == 2 and second.global_step == 6 and second.resumed_from.endswith("step_00000002")
    def found(step: int) -> int:
        return next(k for k, line in enumerate(lines) if line.startswith(
            f"checkpoint step_{step:08d} skipped: file state/mp_rank_00_model_states.pt holds 4096 bytes"))

    stopped = lines.index("training stopped: a checkpoint it restored is damaged; resuming from the newest complete one")
    assert found(6) < stopped < found(4), lines  # step 6 at the start, step 4 after Ray's restore failed
    assert sorted(p.name for p in (run / "set_aside").iterdir()) == ["step_00000004", "step_00000006"]
    assert verify(LOCAL, str(run / "step_00000006")) == ""
