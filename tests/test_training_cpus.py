"""Training workers: torch threads from the CPUs given; a CPU request that leaves Ray Data nothing
to run is refused at start, with the numbers."""
from __future__ import annotations

import pytest

from physiofm.platform.config import ConfigError, TrainConfig
from physiofm.platform.trainer import pretrain, worker_threads


def test_a_worker_runs_as_many_threads_as_cpus_a_fraction_rounding_up():
    assert [worker_threads(cpus) for cpus in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)] == [1, 1, 1, 2, 2, 3]


@pytest.mark.slow
def test_two_cpus_per_worker_on_a_two_cpu_cluster_is_refused_at_start(ray_local, tmp_path):
    """On 2 CPUs one worker holding both would starve Ray Data's read tasks (measured: no progress,
    no error); the run is refused before anything is read or written."""
    assert ray_local.cluster_resources()["CPU"] == 2
    cfg = TrainConfig.from_dict({
        "method": {"name": "masked_reconstruction", "modality": "ecg"},
        "data": {"corpus": str(tmp_path / "raw-recordings-never-read")},
        "scaling": {"num_workers": 1, "cpus_per_worker": 2},
        "run": {"storage": str(tmp_path / "runs")}})
    lines = []
    with pytest.raises(ConfigError, match=r"scaling\.cpus_per_worker=2 x scaling\.num_workers=1 = 2 CPUs of the "
                                          r"cluster's 2 leaves 0 for Ray Data's read tasks, which need 1: .* use "
                                          r"--cpus-per-worker 1 \(1 torch thread\(s\) per worker\)"):
        pretrain(cfg, log=lines.append)
    assert not (tmp_path / "runs").exists() and not any("preparing" in line for line in lines)
