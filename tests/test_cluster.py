"""Requests checked against the cluster: impossible ones fail at once by name, scale-ups are waited
for, node types read from the project's own autoscaling configs."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import yaml

from physiofm.platform.cluster import (GIB, ClusterError, ClusterView, NodeShape, check_request, check_workers_fit,
                                       node_types_of, reachable_cpus, worker_bundle, worker_kind)
from physiofm.platform.config import ConfigError, TrainConfig
from tests.conftest import REPO_ROOT

HEAD = NodeShape("node 10.0.0.1", {"CPU": 0.0, "memory": 16 * GIB, "node:10.0.0.1": 1.0})
CPU_TYPE = NodeShape("node type cpu-worker", {"CPU": 32, "memory": 64 * GIB}, 8)
GPU_TYPE = NodeShape("node type gpu-worker", {"CPU": 8, "GPU": 1, "memory": 64 * GIB}, 2)


def test_a_gpu_request_on_a_cluster_that_can_add_no_gpu_names_gpu_the_request_and_what_exists():
    view = ClusterView(up=(HEAD,), node_types=(CPU_TYPE,), autoscaling=True, max_workers=16)
    with pytest.raises(ClusterError) as err:
        check_request(8, worker_bundle(1, True, 1, {}), view, "scaling.use_gpu")
    text = str(err.value)
    assert text.startswith("scaling.use_gpu: each of the 8 GPU worker(s) asks for 1 CPU, 1 GPU")
    assert "GPU: at most 0 GPU on one node" in text
    assert "nodes up: node 10.0.0.1 (0 CPU, 16 GiB memory)" in text
    assert "node types the autoscaler can add: node type cpu-worker x8 (32 CPU, 64 GiB memory)" in text


def test_more_workers_than_the_node_types_can_ever_hold_fail_with_the_numbers():
    view = ClusterView(up=(HEAD,), node_types=(CPU_TYPE, GPU_TYPE), autoscaling=True, max_workers=16)
    bundle = worker_bundle(1, True, 1, {})
    with pytest.raises(ClusterError, match=r"8 GPU workers x \(1 CPU, 1 GPU\) asked, but this cluster holds at most 2"):
        check_request(8, bundle, view)
    check_request(2, bundle, view)  # two GPU nodes can be added: the request waits for them instead
    assert view.holds_now(bundle) == 0 and view.holds_at_most(bundle) == 2
    capped = ClusterView(up=(HEAD,), node_types=(GPU_TYPE, CPU_TYPE), autoscaling=True, max_workers=1)
    assert capped.holds_at_most(bundle) == 1  # the cluster-wide max_workers caps every type


def test_named_accelerators_and_memory_are_checked_like_gpus():
    view = ClusterView(up=(HEAD,), node_types=(GPU_TYPE,), autoscaling=True)
    with pytest.raises(ClusterError, match=r"asks for 1 CPU, 4 TPU,.* \(TPU: at most 0 TPU on one node\)"):
        check_request(1, worker_bundle(1, False, 1, {"TPU": 4}), view)
    with pytest.raises(ClusterError, match=r"100 GiB memory.*memory: at most 64 GiB memory on one node"):
        check_request(1, worker_bundle(1, False, 1, {}, memory_gib=100), view)
    assert worker_kind(worker_bundle(1, False, 1, {"TPU": 4})) == "TPU"
    assert worker_kind(worker_bundle(1, True, 0.5, {})) == "GPU"


def test_a_fixed_cluster_short_of_workers_is_refused_and_an_unknown_autoscaler_is_waited_for():
    node = NodeShape("node 10.0.0.2", {"CPU": 2.0})
    fixed = ClusterView(up=(node,), node_types=None, autoscaling=False)
    with pytest.raises(ClusterError, match=r"3 CPU workers x \(1 CPU\) asked, but this cluster holds at most 2 such worker\(s\); nodes up: "
                                            r"node 10.0.0.2 \(2 CPU\); no autoscaler"):
        check_workers_fit(3, {"CPU": 1.0}, view=fixed)
    unknown = ClusterView(up=(node,), node_types=None, autoscaling=True)
    assert check_workers_fit(8, {"CPU": 1.0, "GPU": 1.0}, view=unknown) is unknown  # no refusal: it may scale


def test_node_types_of_the_projects_cluster_configs():
    fake = yaml.safe_load((REPO_ROOT / "infra" / "cluster" / "fake-multinode.yaml").read_text())
    types, cap = node_types_of(fake)
    assert {t.name: t.resources.get("gpu_like", 0) for t in types} == {"node type cpu-worker": 0,
                                                                        "node type gpu-like": 1}
    view = ClusterView(up=(NodeShape("head", {"CPU": 0}),), node_types=types, autoscaling=True, max_workers=cap)
    assert view.holds_at_most({"CPU": 1.0, "gpu_like": 1.0}) == 2
    assert reachable_cpus(view) == sum(t.resources["CPU"] * t.count for t in types)
    aws = yaml.safe_load((REPO_ROOT / "infra" / "cluster" / "aws.yaml").read_text())
    aws_types, _ = node_types_of(aws)
    gpu = {t.name: t.resources for t in aws_types}["node type gpu-worker"]
    assert gpu["GPU"] == 1 and gpu["CPU"] > 0
    assert node_types_of({"available_node_types": {"w": {"resources": {}, "max_workers": 2}}}) == (None, None)


def test_resource_flags_set_the_request_and_reserved_names_are_refused():
    cfg = TrainConfig.from_dict({"method": {"name": "masked_reconstruction"},
                                 "scaling": {"resources_per_worker": {"TPU": 4}, "memory_per_worker_gib": 8}})
    assert cfg.scaling.resources_per_worker == {"TPU": 4} and cfg.scaling.memory_per_worker_gib == 8
    with pytest.raises(ConfigError, match=r"'GPU' is set by scaling.use_gpu"):
        TrainConfig.from_dict({"method": {"name": "masked_reconstruction"},
                               "scaling": {"resources_per_worker": {"GPU": 1}}})
    from physiofm.platform.cli import overrides_from_args

    module = {}
    exec((REPO_ROOT / "jobs" / "pretrain_ecg.py").read_text(), module)
    cli = module["parser"]()
    args = cli.parse_args(["--resource", "TPU=4", "--resource", "gpu_like", "--memory-per-worker", "8",
                           "--scale-up-timeout", "30", "--gpus-per-worker", "0.5"])
    assert overrides_from_args(cli, args)["scaling"] == {
        "resources_per_worker": {"TPU": 4.0, "gpu_like": 1.0}, "memory_per_worker_gib": 8.0,
        "scale_up_timeout_s": 30.0, "gpus_per_worker": 0.5}


@pytest.mark.slow
def test_pretrain_use_gpu_on_a_cluster_without_gpus_exits_in_seconds(job_env):
    """The acceptance case: `python jobs/pretrain_ecg.py --use-gpu` joined to a cluster (the tests'
    own, 2 CPUs, no GPU, no autoscaler) exits non-zero within seconds, naming GPU and what exists."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "jobs/pretrain_ecg.py", "--use-gpu", "--num-workers", "8"],
                          cwd=REPO_ROOT, env=job_env, capture_output=True, text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert re.search(r"error: --use-gpu: scaling.use_gpu: each of the 8 GPU worker\(s\) asks for [\d.]+ CPU, 1 GPU, "
                     r"which no node of this cluster has or can add", proc.stderr), proc.stderr[-2000:]
    assert "GPU: at most 0 GPU on one node" in proc.stderr and "no autoscaler" in proc.stderr
    assert "nodes up: node " in proc.stderr and "2 CPU" in proc.stderr
    assert "training" not in proc.stdout and "Traceback" not in proc.stderr
    print(f"refused in {elapsed:.1f} s (process start and imports included)")
    assert elapsed < 60  # a Python start with torch imported, on a loaded 2-core machine: seconds


@pytest.mark.slow
def test_a_sweep_can_ask_the_autoscaler_for_its_workers_and_withdraw_it(ray_local):
    """`request_workers` is `ray.autoscaler.sdk.request_resources`: the autoscaler (v1) reads the
    request from the GCS key it is stored under; `release_request` empties it."""
    import json

    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    from physiofm.platform.cluster import release_request, request_workers

    request_workers(3, {"CPU": 1.0, "gpu_like": 1.0})  # v1 stores the bundles as a JSON list
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == [{"CPU": 1.0, "gpu_like": 1.0}] * 3
    release_request()
    assert json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL)) == []
