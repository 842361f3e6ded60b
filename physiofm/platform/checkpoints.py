"""Checkpoints that recover: each one carries a manifest of its files, and a resume starts from the
newest checkpoint that is complete.

Every rank writes, last in its checkpoint directory, `physiofm-checkpoint-rank{R}.json`: the
files it wrote with their sizes and SHA-256, the step and the world size. A checkpoint is complete
when all `world_size` manifests are present and every file they list has its size and checksum.

Before a run resumes, `recover_run` verifies the checkpoint Ray Train would restore (the latest in
its run snapshot, `checkpoint_manager_snapshot.json`). One that is incomplete or damaged (a
truncated upload, a full disk, a flipped bit) is moved to `set_aside/` under the run, dropped from
the snapshot, and the next newest is verified in turn; the snapshot is rewritten to match what is
left (atomically), so that Ray restores the checkpoint that was verified and never refers to one
that is gone. A snapshot that is itself unreadable is rebuilt from the checkpoints present (their
metrics.json). Checkpoints written before manifests existed are restored unverified, with a note.

DeepSpeed restores its state with `torch.load(weights_only=False)`, which unpickles: a run's
storage must be as trusted as the code that runs it (see docs/training.md).
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST_NAME = "physiofm-checkpoint-rank{rank}.json"
MANIFEST_FILE = re.compile(r"^physiofm-checkpoint-rank(\d+)\.json$")
SNAPSHOT_NAME = "checkpoint_manager_snapshot.json"  # Ray Train V2's run snapshot
CHECKPOINT_DIR = re.compile(r"^step_\d{8}$")
SET_ASIDE = "set_aside"
_CHUNK = 8 << 20


DAMAGED = "physiofm: damaged checkpoint"  # begins CheckpointDamaged's message, found in Ray's error text


class CheckpointDamaged(RuntimeError):
    """A checkpoint that does not match its manifests; the message names the file."""


def write_manifest(directory: str | Path, rank: int, world_size: int, step: int) -> Path:
    """This rank's manifest of the files in its checkpoint `directory`, written last (atomically)."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        if MANIFEST_FILE.match(path.name) or name.startswith("."):
            continue
        files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path.open("rb"))}
    manifest = {"version": 1, "rank": rank, "world_size": world_size, "step": step, "files": files,
                "written_at": time.time()}
    target = directory / MANIFEST_NAME.format(rank=rank)
    temporary = directory / f".{target.name}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(temporary, target)
    return target


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    with handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(fs, path: str, manifests_expected: bool = False) -> str:
    """'' when the checkpoint at `path` (on fsspec filesystem `fs`) matches its manifests, else why
    not, naming the file. A checkpoint without manifests is 'unverified' (an earlier version's), or
    incomplete when `manifests_expected` (the run's other checkpoints have them) or when it lacks
    DeepSpeed's model states."""
    try:
        names = {posixpath.relpath(p, path): info for p, info in fs.find(path, detail=True).items()}
    except (OSError, ValueError) as error:
        return f"cannot be listed: {error}"
    manifests = sorted(n for n in names if MANIFEST_FILE.match(posixpath.basename(n)) and "/" not in n)
    if not manifests:
        if manifests_expected:
            return "incomplete: no manifest of any rank (its upload was cut short)"
        if not any(n.endswith("model_states.pt") for n in names):
            return "incomplete: it holds no DeepSpeed model states"
        return "unverified"
    try:
        parsed = [json.loads(fs.cat_file(posixpath.join(path, n))) for n in manifests]
    except (OSError, ValueError) as error:
        return f"its manifest does not read ({error})"
    world = max(int(m.get("world_size", 1)) for m in parsed)
    ranks = {int(m.get("rank", -1)) for m in parsed}
    missing = sorted(set(range(world)) - ranks)
    if missing:
        return (f"incomplete: the manifest(s) of rank(s) {missing} of {world} are missing (their files were never "
                "all written)")
    for manifest in parsed:
        for name, expected in sorted(manifest["files"].items()):
            info = names.get(name)
            if info is None:
                return f"file {name} (rank {manifest['rank']}) is missing"
            size = int(info.get("size") or 0)
            if size != expected["bytes"]:
                return f"file {name} holds {size} bytes, its manifest says {expected['bytes']} (truncated?)"
            digest = _sha256(fs.open(posixpath.join(path, name), "rb"))
            if digest != expected["sha256"]:
                return f"file {name} does not match its checksum (damaged)"
    return ""


def verify_local(directory: str | Path) -> None:
    """Raise `CheckpointDamaged` when a checkpoint downloaded to `directory` is not as written."""
    import fsspec

    why = verify(fsspec.filesystem("file"), str(Path(directory).resolve()))
    if why and why != "unverified":
        raise CheckpointDamaged(f"{DAMAGED} {directory}: {why}")


@dataclass
class Recovery:
    """What `recover_run` found: the checkpoint a resume restores ('' = none), those it skipped."""

    resume_from: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (checkpoint, why)
    unverified: bool = False
    rebuilt_snapshot: bool = False


def recover_run(fs, run_path: str, log: Callable[[str], None] = print) -> Recovery:
    """Make the run at `run_path` (fsspec `fs`) resume from its newest complete checkpoint."""
    recovery = Recovery()
    snapshot_path = posixpath.join(run_path, SNAPSHOT_NAME)
    present = sorted(posixpath.basename(p) for p in _ls(fs, run_path) if CHECKPOINT_DIR.match(posixpath.basename(p)))
    snapshot = _read_snapshot(fs, snapshot_path)
    if snapshot is None:
        if not present:
            return recovery
        snapshot = _rebuilt_snapshot(fs, run_path, present)
        recovery.rebuilt_snapshot = True
        log(f"the run snapshot {snapshot_path} is missing or unreadable: rebuilt from the {len(present)} "
            "checkpoint(s) present")
    changed = recovery.rebuilt_snapshot
    with_manifests = any(fs.exists(posixpath.join(run_path, name, MANIFEST_NAME.format(rank=0))) for name in present)
    for result in list(snapshot["checkpoint_results"]):  # Ray refuses a snapshot naming what is gone
        name = result["checkpoint_dir_name"]
        if name not in present and name != (snapshot.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name"):
            log(f"checkpoint {name} of the run snapshot is missing from the run's storage: dropped from the snapshot")
            _drop(snapshot, name)
            changed = True
    while True:
        latest = snapshot.get("latest_checkpoint_result")
        if not latest:
            break
        name = latest["checkpoint_dir_name"]
        why = (verify(fs, posixpath.join(run_path, name), with_manifests) if name in present
               else "missing from the run's storage")
        if why in ("", "unverified"):
            recovery.resume_from, recovery.unverified = name, why == "unverified"
            if recovery.unverified:
                log(f"checkpoint {name} has no manifest (written by an earlier version): restored unverified")
            break
        recovery.skipped.append((name, why))
        if name in present:
            target = posixpath.join(run_path, SET_ASIDE, name)
            fs.makedirs(posixpath.dirname(target), exist_ok=True)
            if fs.exists(target):
                target = f"{target}-{int(time.time())}"
            fs.mv(posixpath.join(run_path, name), target, recursive=True)
            log(f"checkpoint {name} skipped: {why}; moved to {target}")
        else:
            log(f"checkpoint {name} skipped: {why}")
        _drop(snapshot, name)
        changed = True
    if changed:
        _write_atomic(fs, snapshot_path, json.dumps(snapshot).encode())
    if recovery.skipped:
        log(f"resuming from {recovery.resume_from or 'scratch (no complete checkpoint is left)'} instead of "
            f"{recovery.skipped[0][0]}")
    return recovery


def _ls(fs, path: str) -> list[str]:
    try:
        return fs.ls(path, detail=False) if fs.exists(path) else []
    except FileNotFoundError:
        return []


def _read_snapshot(fs, path: str) -> dict | None:
    if not fs.exists(path):
        return None
    try:
        snapshot = json.loads(fs.cat_file(path))
    except (ValueError, UnicodeDecodeError):
        return None
    needed = {"checkpoint_results", "checkpoint_report_indices", "current_report_index"}
    return snapshot if isinstance(snapshot, dict) and needed <= set(snapshot) else None


def _rebuilt_snapshot(fs, run_path: str, present: list[str]) -> dict:
    """A run snapshot as Ray Train writes it, from the checkpoints present, oldest first."""
    import ray

    results = []
    for name in present:
        try:
            metrics = json.loads(fs.cat_file(posixpath.join(run_path, name, "metrics.json")))
        except (OSError, ValueError):
            metrics = {}
        results.append({"version": 0, "checkpoint_dir_name": name, "metrics": metrics})
    return {"ray_version": ray.__version__, "checkpoint_results": results,
            "checkpoint_report_indices": list(range(len(results))),
            "latest_checkpoint_result": results[-1] if results else None,
            "pending_training_results": [], "pending_validation_specs": [], "current_report_index": len(results),
            "validated_checkpoint_dir_names": [], "timed_out_validation_checkpoint_dir_names": [],
            "failed_validation_checkpoint_dir_names": []}


def _drop(snapshot: dict, name: str) -> None:
    """Remove checkpoint `name` from a run snapshot; the latest becomes the newest one left."""
    results, indices = snapshot["checkpoint_results"], snapshot["checkpoint_report_indices"]
    keep = [k for k, result in enumerate(results) if result["checkpoint_dir_name"] != name]
    snapshot["checkpoint_results"] = [results[k] for k in keep]
    snapshot["checkpoint_report_indices"] = [indices[k] for k in keep]
    pending = snapshot.get("pending_training_results", [])
    specs = snapshot.get("pending_validation_specs", [])
    kept = [k for k, result in enumerate(pending) if result["checkpoint_dir_name"] != name]
    snapshot["pending_training_results"] = [pending[k] for k in kept]
    snapshot["pending_validation_specs"] = [specs[k] for k in kept]
    for key in ("validated_checkpoint_dir_names", "timed_out_validation_checkpoint_dir_names",
                "failed_validation_checkpoint_dir_names"):
        snapshot[key] = [n for n in snapshot.get(key, []) if n != name]
    if snapshot["checkpoint_results"]:
        newest = max(range(len(keep)), key=lambda k: snapshot["checkpoint_report_indices"][k])
        snapshot["latest_checkpoint_result"] = snapshot["checkpoint_results"][newest]
    else:
        snapshot["latest_checkpoint_result"] = None


def _write_atomic(fs, path: str, data: bytes) -> None:
    from fsspec.implementations.local import LocalFileSystem

    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)  # one PUT: whole or not at all
        return
    folder = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
