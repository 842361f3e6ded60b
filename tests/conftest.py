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


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: extra threads only contend with other test runs on the host."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared():
    return shared_path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API (moto's server) on 127.0.0.1; fake credentials in the environment.

    Started before any Ray cluster of the session so that workers inherit the endpoint.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        FSSPEC_S3_ENDPOINT_URL=endpoint,
    )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
           "FSSPEC_S3_ENDPOINT_URL")


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket on the moto server; yields its `s3://name` URI."""
    import uuid

    import boto3

    name = f"physiofm-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def ray_local(s3_endpoint):
    """A Ray cluster owned by this test session (never `ray stop`: that kills every Ray on the host)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(
        address="local",
        num_cpus=2,
        # The dashboard serves Ray's state API; without it Ray Train's placement-group cleaner
        # takes the live controller for dead and tears the first worker group down (Ray 2.60).
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in ("PYTHONPATH", *_S3_ENV)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
