"""What a job asks of its cluster, checked against what the cluster has and what its autoscaler can add.

A training run asks for `num_workers` equal bundles (CPU, GPU or a named accelerator resource,
memory). Before anything trains, they are compared with the nodes that are up and,
where the cluster autoscales, with the node types its autoscaler can launch:

- a bundle no node and no node type can hold, or more workers than the cluster can ever hold,
  fails at once, naming the resource, what was asked and what exists;
- a request that needs new nodes waits for them ("waiting for 8 GPU workers: 2 up"), bounded by
  `scaling.scale_up_timeout_s`: a placement group of the same bundles is what the autoscaler acts on.

`check_workers_fit` is the first (before any data is read), `wait_for_workers` the second (just
before the trainer starts).

Node types are read the documented ways: the cluster config an autoscaler reports to the GCS (Ray's
autoscaler v2, KubeRay), else the autoscaling config file named by `PHYSIOFM_AUTOSCALING_CONFIG`, else
the one the cluster launcher writes on the head (`~/ray_bootstrap_config.yaml`). A cluster whose
autoscaler runs but whose node types cannot be read is waited for, never refused.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from physiofm.platform.config import ConfigError

Log = Callable[[str], None]
GIB = float(2**30)
AUTOSCALING_CONFIG_ENV = "PHYSIOFM_AUTOSCALING_CONFIG"
LAUNCHER_CONFIG = Path("~/ray_bootstrap_config.yaml")  # where `ray up` puts the config on the head
_SKIPPED = ("node:", "accelerator_type:", "object_store_memory")  # not what a worker asks for


class ClusterError(ConfigError):
    """A request the cluster cannot meet (now, or ever)."""


@dataclass(frozen=True)
class NodeShape:
    """Nodes of one kind: an up node (count 1) or a node type the autoscaler can launch `count` of."""

    name: str
    resources: Mapping[str, float]
    count: int = 1

    def fits(self, bundle: Mapping[str, float]) -> int:
        """Bundles one such node holds."""
        per_node = math.inf
        for key, amount in bundle.items():
            if amount > 0:
                per_node = min(per_node, math.floor(float(self.resources.get(key, 0.0)) / amount + 1e-9))
        return 0 if per_node == math.inf else int(per_node)


@dataclass(frozen=True)
class ClusterView:
    up: tuple[NodeShape, ...]
    node_types: tuple[NodeShape, ...] | None  # None: the autoscaler's node types are unknown
    autoscaling: bool  # an autoscaler runs (with or without known node types)
    max_workers: int | None = None  # the autoscaling config's cap on worker nodes

    def holds_now(self, bundle: Mapping[str, float]) -> int:
        return sum(shape.fits(bundle) for shape in self.up)

    def holds_at_most(self, bundle: Mapping[str, float]) -> int:
        """Upper bound on the bundles the cluster can hold once scaled up (up nodes + every launchable one)."""
        extra, budget = 0, self.max_workers if self.max_workers is not None else math.inf
        for shape in sorted(self.node_types or (), key=lambda s: -s.fits(bundle)):
            count = int(min(shape.count, budget))
            extra += shape.fits(bundle) * count
            budget -= count
        return self.holds_now(bundle) + extra


def worker_bundle(cpus: float, use_gpu: bool, gpus: float, resources: Mapping[str, float],
                  memory_gib: float = 0.0) -> dict[str, float]:
    bundle = {"CPU": float(cpus), **{k: float(v) for k, v in resources.items()}}
    if use_gpu:
        bundle["GPU"] = float(gpus)
    if memory_gib > 0:
        bundle["memory"] = memory_gib * GIB
    return {k: v for k, v in bundle.items() if v > 0}


def worker_kind(bundle: Mapping[str, float]) -> str:
    """What a worker is called in messages: "GPU", its accelerator resource, else "CPU"."""
    if "GPU" in bundle:
        return "GPU"
    named = [k for k in bundle if k not in ("CPU", "memory")]
    return named[0] if named else "CPU"


def show_amount(key: str, amount: float) -> str:
    return f"{amount / GIB:.3g} GiB memory" if key == "memory" else f"{amount:g} {key}"


def show_resources(resources: Mapping[str, float]) -> str:
    shown = [show_amount(k, float(v)) for k, v in sorted(resources.items(), key=lambda kv: (kv[0] != "CPU", kv[0]))
             if not k.startswith(_SKIPPED)]
    return ", ".join(shown) or "no resources"


def describe(view: ClusterView) -> str:
    up = "; ".join(f"{s.name} ({show_resources(s.resources)})" for s in view.up) or "none"
    text = f"nodes up: {up}"
    if view.node_types is None:
        return text + ("; node types of its autoscaler: unknown" if view.autoscaling else "; no autoscaler")
    types = "; ".join(f"{s.name} x{s.count} ({show_resources(s.resources)})" for s in view.node_types)
    return text + f"; node types the autoscaler can add: {types or 'none'}"


def check_request(num_workers: int, bundle: Mapping[str, float], view: ClusterView, flag: str = "") -> None:
    """Raise ClusterError when no node can ever hold a worker, or the cluster never holds all of them."""
    kind = worker_kind(bundle)
    asked = ", ".join(show_amount(k, v) for k, v in bundle.items())
    prefix = f"{flag}: " if flag else ""
    if view.autoscaling and view.node_types is None:
        return  # the autoscaler may know node types we cannot read: wait for it (bounded) instead
    shapes = [*view.up, *(view.node_types or ())]
    if not any(shape.fits(bundle) for shape in shapes):
        missing = [key for key in bundle
                   if not any(float(s.resources.get(key, 0.0)) >= bundle[key] for s in shapes)]
        most = ", ".join(f"{key}: at most {show_amount(key, max((float(s.resources.get(key, 0.0)) for s in shapes), default=0.0))}"
                         f" on one node" for key in missing) or "no single node has all of them"
        raise ClusterError(
            f"{prefix}each of the {num_workers} {kind} worker(s) asks for {asked}, which no node of this cluster "
            f"has or can add ({most}); {describe(view)}")
    most = view.holds_at_most(bundle)
    if most < num_workers:
        raise ClusterError(
            f"{prefix}{num_workers} {kind} workers x ({asked}) asked, but this cluster holds at most {most} "
            f"such worker(s){' even fully scaled up' if view.autoscaling else ''}; {describe(view)}")


# ---------------------------------------------------------------- reading the cluster
def read_cluster(autoscaling_config: str | None = None) -> ClusterView:
    """The cluster `ray` is connected to: its live nodes, and its autoscaler's node types if known."""
    import ray

    up = tuple(NodeShape(f"node {n.get('NodeManagerAddress', '?')}", dict(n.get("Resources", {})))
               for n in ray.nodes() if n.get("Alive"))
    node_types, max_workers = _node_types_from_gcs()
    if node_types is None:
        node_types, max_workers = _node_types_from_file(autoscaling_config)
    return ClusterView(up=up, node_types=node_types, max_workers=max_workers,
                       autoscaling=node_types is not None or _autoscaler_reports())


def _node_types_from_gcs() -> tuple[tuple[NodeShape, ...] | None, int | None]:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an older GCS without the call: fall back to the config file
        return None, None
    if not config or not config.node_group_configs:
        return None, None
    return tuple(NodeShape(f"node type {g.name}", dict(g.resources), g.max_count if g.max_count >= 0 else 10**6)
                 for g in config.node_group_configs if g.max_count != 0), None


def autoscaling_config_path(explicit: str | None = None) -> Path | None:
    for candidate in (explicit, os.environ.get(AUTOSCALING_CONFIG_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise ClusterError(f"autoscaling config {str(path)!r} (from {AUTOSCALING_CONFIG_ENV}) does not exist")
            return path
    launcher = LAUNCHER_CONFIG.expanduser()
    return launcher if launcher.is_file() else None


def node_types_of(config: Mapping) -> tuple[tuple[NodeShape, ...] | None, int | None]:
    """Worker node types of a cluster launcher / autoscaling config (`available_node_types`).

    None when a worker type states no CPU count: its resources are left to the provider's detection
    (`ray up` fills them into the head's copy), so what it offers is unknown here.
    """
    head = config.get("head_node_type")
    shapes = []
    for name, spec in (config.get("available_node_types") or {}).items():
        resources = dict(spec.get("resources") or {})
        count = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if name == head or count <= 0:
            continue
        if "CPU" not in resources:
            return None, None
        shapes.append(NodeShape(f"node type {name}", resources, count))
    cap = config.get("max_workers")
    return tuple(shapes), int(cap) if cap is not None else None


def _node_types_from_file(explicit: str | None) -> tuple[tuple[NodeShape, ...] | None, int | None]:
    path = autoscaling_config_path(explicit)
    if path is None:
        return None, None
    import yaml

    return node_types_of(yaml.safe_load(path.read_text()) or {})


def _autoscaler_reports() -> bool:
    """Whether an autoscaler that can launch nodes reports its state (what `ray status` reads).

    A fixed cluster (a local Ray, `ray start` without an autoscaling config) runs a read-only one,
    whose node types are its nodes, each named `node_<node id>`.
    """
    try:
        from ray.experimental.internal_kv import _internal_kv_get

        status = _internal_kv_get(b"__autoscaling_status")
        report = json.loads(status).get("autoscaler_report") if status else None
    except Exception:  # noqa: BLE001 - no status: treated as a fixed cluster
        return False
    if not report:
        return False
    mapping = report.get("node_type_mapping") or {}
    return not mapping or any(kind != f"node_{node}" for node, kind in mapping.items())


# ---------------------------------------------------------------- acting on it
def check_workers_fit(num_workers: int, bundle: Mapping[str, float], *, key: str = "",
                      view: ClusterView | None = None) -> ClusterView:
    """Refuse, within seconds, workers the cluster can never hold: no node or node type fits one, or
    the cluster fully scaled up (a cluster without autoscaler: as it is) holds fewer."""
    view = view or read_cluster()
    check_request(num_workers, bundle, view, key)
    return view


def wait_for_workers(num_workers: int, bundle: Mapping[str, float], *, timeout_s: float, log: Log,
                     poll_s: float = 5.0) -> None:
    """Return once the cluster's nodes can hold the workers; while an autoscaler adds nodes, one
    progress line per `poll_s`; a ClusterError after `timeout_s` (scaling.scale_up_timeout_s).

    The wait is a placement group of the workers' bundles (what the autoscaler acts on), removed
    again once placed: the trainer then places its own group on the nodes that came up.
    """
    if _holds_now(bundle) >= num_workers:
        return
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    kind = worker_kind(bundle)
    started = time.monotonic()
    group = placement_group([dict(bundle)] * num_workers, strategy="PACK")
    try:
        while True:
            up = min(_holds_now(bundle), num_workers)
            waited = time.monotonic() - started
            log(f"waiting for {num_workers} {kind} workers: {up} up ({waited:.0f} s; at most "
                f"{timeout_s:g} s, --scale-up-timeout)")
            if waited >= timeout_s:
                raise ClusterError(
                    f"scaling.scale_up_timeout_s: the autoscaler did not add nodes for {num_workers} {kind} workers "
                    f"within {timeout_s:g} s ({up} up); {describe(read_cluster())}")
            ready, _ = ray.wait([group.ready()], timeout=min(poll_s, timeout_s - waited))
            if ready:
                log(f"{num_workers} {kind} workers' nodes are up after {time.monotonic() - started:.0f} s")
                return
    finally:
        remove_placement_group(group)


def _holds_now(bundle: Mapping[str, float]) -> int:
    import ray

    return sum(NodeShape("", dict(n.get("Resources", {}))).fits(bundle) for n in ray.nodes() if n.get("Alive"))


def reachable_cpus(view: ClusterView | None = None) -> float:
    """CPUs the cluster has, or can reach through its autoscaler: data preparation sizes its pool from it."""
    view = view or read_cluster()
    up = sum(float(s.resources.get("CPU", 0.0)) for s in view.up)
    return max(up, float(view.holds_at_most({"CPU": 1.0}))) if view.node_types else up


def request_workers(num_workers: int, bundle: Mapping[str, float]) -> None:
    """Ask the autoscaler to keep room for `num_workers` such bundles (a sweep warming its cluster
    before its trials start); `release_request()` withdraws it. A no-op without an autoscaler."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(bundle)] * num_workers)


def release_request() -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[])
