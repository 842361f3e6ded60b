"""Shared test fixtures: the read-only `../shared/` material and an owned local Ray."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PHYSIOFM_SHARED", REPO_ROOT.parent / "shared"))

# Token auth must agree between every process that starts or talks to a cluster (Ray >= 2.59).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Workers of an owned local cluster must import this checkout, not another install.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)


def shared_path(*parts: str) -> Path:
    """Path inside `../shared/`; skips the calling test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared material not found: {path} (tests read ../shared/ beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared():
    return shared_path


@pytest.fixture(scope="session")
def ray_local():
    """A Ray cluster owned by this test session (never `ray stop`: that kills every Ray on the host)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
