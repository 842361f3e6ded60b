"""The next command a job prints: prepare -> pretrain -> embed -> finetune, each runnable by
copy-paste from the output of the one before (same folder, same shell).

Each job ends by naming what it wrote and `next_commands(step, ...)`: the commands that continue
the chain from what it wrote. A job joining the chain adds its step to `NEXT_STEPS`.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Callable

#: step -> commands that continue from its outputs (keyword arguments: what the step wrote)
NEXT_STEPS: dict[str, Callable[..., list[str]]] = {}


def job_command(script: str, *args: object) -> str:
    """`python <jobs dir>/<script> ARGS`, shell-quoted, with the jobs folder as the running job was
    invoked (`jobs/` from the checkout, as the README and `ray job submit` run them)."""
    return " ".join(shlex.quote(str(part)) for part in ("python", str(jobs_dir() / script), *args))


def jobs_dir() -> Path:
    invoked = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if invoked.suffix == ".py" and invoked.parent.name == "jobs":
        return invoked.parent
    return Path("jobs")


def next_commands(step: str, **outputs: object) -> list[str]:
    make = NEXT_STEPS.get(step)
    return make(**outputs) if make else []


def render_next(commands: list[str], indent: str = "  ") -> list[str]:
    """Lines naming the next commands ("next" on the first)."""
    return [f"{indent}{'next' if i == 0 else ''.ljust(4)}         {c}" for i, c in enumerate(commands)]


def after_prepare(corpus: str, modality: str) -> list[str]:
    job = {"ecg": "pretrain_ecg.py", "eeg": "pretrain_eeg.py"}.get(modality)
    return [job_command(job, "--corpus", corpus)] if job else []


def after_pretrain(method: str, export_uri: str, exports: list[str], corpus: str, run_uri: str) -> list[str]:
    """A CBraMod export (ECG or EEG) embeds with jobs/embed.py."""
    if method != "masked_reconstruction" or "encoder.pt" not in exports:
        return []
    encoder = f"{export_uri.rstrip('/')}/encoder.pt"
    return [job_command("embed.py", "--corpus", corpus, "--encoder", encoder,
                        "--output", f"{run_uri.rstrip('/')}-embeddings")]


NEXT_STEPS.update(prepare=after_prepare, pretrain=after_pretrain)


def relative(path: str) -> str:
    """A local path relative to the working folder when under it (shorter to copy), else as given."""
    if "://" in path:
        return path
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else path
    except ValueError:
        return path
