"""Shared test fixtures: the read-only `../shared/` material, one owned local Ray for the whole test
run (`ray_local`), one demo cache (`demo_cache`, `job_env`) and one prepared ECG corpus (`ecg_corpus`).

Tiers: unit tests (`pytest -m "not slow"`) start no training run and run the preparation pipeline
only to build the shared corpora (one per session or module); `slow` tests are end-to-end runs (Ray
Train + DeepSpeed, jobs run whole, pipelines over inputs of their own, killed and resumed); `soak`
tests (long, by hand: `pytest -m soak`) are excluded by default and count as slow.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from physiofm.platform.console import local_ray_environment

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PHYSIOFM_SHARED", REPO_ROOT.parent / "shared"))

# Token auth must agree between every process that starts or talks to a cluster (Ray >= 2.59).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# The tests' cluster runs as a job's own local Ray does (physiofm.platform.console: no preemption
# watcher, one Parquet footer reader per listing, Ray Data's console at WARNING, Ray Train's controller
# polling its workers every 0.5 s).
for _name, _value in local_ray_environment().items():
    os.environ.setdefault(_name, _value)
# Workers of an owned local cluster must import this checkout, not another install.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
)


# Test files by what they cost on 2 cores (`pytest --durations=0`, summed per file, slowest first).
# The suite runs on two pytest-xdist workers, one file at a time each (`--dist loadfile`), in this
# order (`--no-loadscope-reorder`: xdist would otherwise start the files with the most tests first,
# which are quick unit files): the long files start first and the short ones fill in at the end, so
# neither worker idles while the other finishes a long file. A file not named here runs after these.
LONGEST_FIRST = (
    "test_jobs_main", "test_platform_train", "test_data_pipeline", "test_finetune_protocols", "test_autoscaling",
    "test_method_jobs", "test_benchmarks", "test_tune_sweep", "test_platform_recovery", "test_method_data",
    "test_data_faults", "test_data_correctness", "test_data_job", "test_cluster", "test_data_splits",
    "test_trainer_data",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A soak test is a slow test too: `-m "not slow"` leaves it out whatever -m the default has.
    Files then run longest first (LONGEST_FIRST); a file's tests stay together and in their order."""
    for item in items:
        if item.get_closest_marker("soak") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


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
    """The Ray cluster of this test run (never `ray stop`: that kills every Ray on the host).

    Its dashboard serves Ray's state API, which Ray Train's placement-group cleaner asks whether the
    controller lives; `RAY_API_SERVER_ADDRESS` (inherited by every worker, also of the job
    subprocesses that join) names this cluster's dashboard, so the cleaner never picks another Ray
    instance of the host ("Found multiple active Ray instances").
    """
    import ray

    from tests.ray_head import free_ports

    if ray.is_initialized():
        yield ray
        return
    dashboard_port = free_ports(1)[0]
    saved = os.environ.get(API_SERVER_ENV)
    os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{dashboard_port}"
    ray.init(
        address="local",
        num_cpus=2,
        # Without the dashboard the cleaner takes the live controller for dead and tears the
        # first worker group down (Ray 2.60).
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dashboard_port,
        log_to_driver=False,
        runtime_env={"env_vars": {k: os.environ[k] for k in ("PYTHONPATH", API_SERVER_ENV, *_S3_ENV)}},
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop(API_SERVER_ENV, None)
        else:
            os.environ[API_SERVER_ENV] = saved


API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """One PHYSIOFM_CACHE for the test run: each demo corpus is written and prepared once."""
    return tmp_path_factory.mktemp("physiofm-cache")


@pytest.fixture(scope="session")
def job_env(ray_local, demo_cache) -> dict[str, str]:
    """Environment of a job subprocess: it joins the session's Ray (as under `ray job submit`)
    and shares the session's demo cache."""
    return {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address,
            "PHYSIOFM_CACHE": str(demo_cache)}


@pytest.fixture(scope="session")
def ecg_corpus(ray_local, tmp_path_factory) -> str:
    """24 PTB-XL-like 12-lead records prepared into windows once for the test run."""
    from physiofm.data.pipeline import prepare_corpus
    from physiofm.data.synthetic import write_ptbxl

    root = tmp_path_factory.mktemp("ecg")
    write_ptbxl(root / "raw", n_records=24, seed=3)
    summary = prepare_corpus([str(root / "raw")], str(root / "windows"), preset="ecg", progress=lambda _: None)
    assert summary["windows"] == 24
    return str(root / "windows")


def run_job_main(script: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """`python jobs/<script> ARGV` in this process: (exit code, stdout, stderr). For checks that end
    before any Ray start (bad flags, --help); a subprocess would spend seconds importing torch."""
    import runpy

    main = runpy.run_path(str(REPO_ROOT / "jobs" / script), run_name="job")["main"]
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse: --help and bad choices
        code = exit_.code if isinstance(exit_.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err
