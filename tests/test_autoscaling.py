"""A real autoscaling run on one machine: Ray's fake_multinode provider with the project's own config
(infra/cluster/fake-multinode.yaml: a head with no CPU, a CPU worker type and a GPU-like type whose
`gpu_like` resource stands in for GPU). A 2-worker pretraining job asking for `gpu_like` makes the
autoscaler add two nodes, trains over gloo across them with DeepSpeed, checkpoints; the nodes go
after the idle timeout; a corpus preparation then scales the CPU type. Token auth on, free loopback
ports, its own temp dir; only its own processes are stopped (never `ray stop`)."""
from __future__ import annotations

import subprocess
import time

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.ray_head import RayHead, free_ports

pytestmark = pytest.mark.slow


def workers_up(head: RayHead) -> dict[str, int]:
    """Worker nodes up, by node type, as the autoscaler reports them."""
    return {kind: n for kind, n in head.active_node_types().items() if kind != "ray.head.default"}


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def run_watching(head: RayHead, entrypoint: list[str], timeout_s: float,
                 poll_s: float = 1.0) -> tuple[subprocess.CompletedProcess, list]:
    """Submit a job and sample the worker nodes up until it ends: (the submission, [(s, {type: n})...]).
    Each sample is one request to the head's dashboard (not a `ray status` process)."""
    env = head.env
    # No --working-dir: the fake nodes share this machine's disk and session folder, and one that stops
    # removes the job's unpacked working dir under the driver's feet; the checkout is on PYTHONPATH.
    argv = ["ray", "job", "submit", "--address", head.dashboard_url, "--", *entrypoint]
    samples = []
    started = time.monotonic()
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None and time.monotonic() - started < timeout_s:
            samples.append((time.monotonic() - started, workers_up(head)))
            time.sleep(poll_s)
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), samples


def test_a_job_scales_the_cluster_up_and_it_scales_back_down(ecg_corpus, tmp_path):
    config = yaml.safe_load((REPO_ROOT / "infra" / "cluster" / "fake-multinode.yaml").read_text())
    metric_port, = free_ports(1)
    autoscaling = tmp_path / "autoscaling.yaml"
    head_cmd = None
    small = tmp_path / "small.yaml"
    small.write_text("method:\n  encoder:\n    n_layer: 1\n    dim_feedforward: 64\ndata:\n  batch_size: 4\n"
                     "optim:\n  warmup_steps: 0\n")
    raw = tmp_path / "raw"
    from physiofm.data.synthetic import write_ptbxl

    write_ptbxl(raw, n_records=4, seed=5)
    started = time.monotonic()
    # the provider joins its nodes to the GCS it is told: this head's, on a free port
    probe = RayHead(tmp_path / "head", num_cpus=0, launcher_command="true")
    config["provider"]["gcs_address"] = f"127.0.0.1:{probe.port}"
    autoscaling.write_text(yaml.safe_dump(config))
    head_cmd = (f"RAY_FAKE_CLUSTER=1 AUTOSCALER_UPDATE_INTERVAL_S=1 AUTOSCALER_METRIC_PORT={metric_port} "
                f"RAY_AUTH_MODE=token PHYSIOFM_AUTOSCALING_CONFIG={autoscaling} RAY_API_SERVER_ADDRESS={probe.dashboard_url} "
                f"ray start --head --port=6379 "
                f"--dashboard-host=127.0.0.1 --autoscaling-config={autoscaling} --disable-usage-stats")
    probe.launcher_command = head_cmd
    with probe as head:
        wait_until(lambda: head.active_node_types().get("ray.head.default") == 1, 300, "the autoscaler's first report")
        assert workers_up(head) == {}  # the head alone, and it holds no CPU
        train, samples = run_watching(head, [
            "python", str(REPO_ROOT / "jobs" / "pretrain_ecg.py"), "--corpus", ecg_corpus, "--num-workers", "2", "--resource",
            "gpu_like=1", "--max-steps", "2", "--checkpoint-every", "2", "--output", str(tmp_path / "runs"),
            "--name", "scaled", "--config", str(small), "--scale-up-timeout", "300"], timeout_s=600)
        assert train.returncode == 0, train.stdout[-4000:] + train.stderr[-4000:]
        assert "waiting for 2 gpu_like workers: 0 up" in train.stdout  # the progress line of the scale-up
        assert "2 gpu_like workers' nodes are up" in train.stdout and "global_step=2" in train.stdout
        assert (tmp_path / "runs" / "scaled" / "step_00000002" / "export" / "encoder.pt").is_file()
        # each worker holds gpu_like=1 and a gpu-like node has one: two workers trained on two nodes
        assert max(up.get("gpu-like", 0) for _, up in samples) == 2, samples
        job_done = time.monotonic()
        wait_until(lambda: workers_up(head) == {}, 120, "the idle GPU-like nodes to be removed")
        print(f"nodes 0 -> 2 -> 0; removed {time.monotonic() - job_done:.0f} s after the job")

        prep, samples = run_watching(head, ["python", str(REPO_ROOT / "jobs" / "prepare_corpus.py"), "--input", str(raw),
                                            "--output", str(tmp_path / "windows")], timeout_s=400)
        assert prep.returncode == 0, prep.stdout[-4000:] + prep.stderr[-4000:]
        assert "windows from 4 of 4 files" in prep.stdout
        assert max(up.get("cpu-worker", 0) for _, up in samples) >= 1, samples  # the CPU type scaled for it
    assert head.own_processes() == []  # the head, its fake nodes and their workers are all gone
    print(f"autoscaling test {time.monotonic() - started:.0f} s")
