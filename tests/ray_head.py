"""A real Ray head for tests: `ray start --head --block` on free ports with its own temp dir.

Token auth stays on (as on a real cluster) with a token of its own in the environment, so
nothing is written to ~/.ray. Stopped through its own process group, never `ray stop`
(which would kill every Ray process of the host).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: every socket stays bound until all are chosen, so the OS
    cannot hand the same port out twice."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class RayHead:
    """`launcher_command`: a cluster launcher's head start command (`ray start --head ...` behind its
    environment) run by bash, as the launcher runs it, with this head's ports, temp dir and `--block`;
    the token is then one `ray get-auth-token --generate` wrote into a home folder of the head's own
    (`self.home`), which its `env` (and so `submit`) uses too, never the user's ~/.ray."""

    def __init__(self, log_dir: Path, num_cpus: int = 2, start_timeout_s: float = 180.0,
                 launcher_command: str | None = None):
        self.log_dir = Path(log_dir)
        self.launcher_command = launcher_command
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        # Every service on a free port: the tests' own local Ray already holds the defaults
        # (a second dashboard agent on 52365 fails, and jobs then find "no available agent").
        services = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                    "node-manager-port", "object-manager-port", "runtime-env-agent-port", "ray-client-server-port")
        self.port, self.dashboard_port, *ports = free_ports(2 + len(services))
        self.service_ports = dict(zip(services, ports))
        # Unix socket paths under the temp dir must stay short: a fresh folder under /tmp.
        self.temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # those of the tests' own cluster
            self.env.pop(name, None)
        self.home = ""
        if launcher_command:
            self.home = os.path.join(self.temp_dir, "home")
            os.makedirs(self.home)
            self.env.pop("RAY_AUTH_TOKEN")
            self.env.update(HOME=self.home)
        self.process: subprocess.Popen | None = None

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> "RayHead":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        own = [f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true", f"--num-cpus={self.num_cpus}",
               f"--temp-dir={self.temp_dir}", *(f"--{name}={port}" for name, port in self.service_ports.items())]
        if self.launcher_command:
            subprocess.run(["ray", "get-auth-token", "--generate"], env=self.env, check=True, capture_output=True)
            command = re.sub(r"--port=\d+", f"--port={self.port}", self.launcher_command)
            command = command.replace("--autoscaling-config=~/ray_bootstrap_config.yaml", "")  # `ray up` writes it
            argv = ["bash", "-c", f"{command} --block {' '.join(own)}"]
        else:
            argv = ["ray", "start", "--head", "--block", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                    "--disable-usage-stats", *own]
        with open(self.log_dir / "ray-start.log", "wb") as log:
            self.process = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:  # ready once the job agent answers (the dashboard alone comes up earlier)
            probe = subprocess.run(["ray", "job", "list", "--address", self.dashboard_url], env=self.env,
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"Ray head did not start: {probe.stderr[-2000:]}\n"
                                   f"{(self.log_dir / 'ray-start.log').read_text()[-2000:]}")
            time.sleep(2.0)  # each probe is a CLI process (~1.5 s of CPU) taken from the starting head

    def submit(self, working_dir: Path, entrypoint: list[str], timeout_s: float = 900.0,
               agent_wait_s: float = 120.0) -> subprocess.CompletedProcess:
        """`ray job submit --working-dir ... -- entrypoint`, waiting for the head's job agent.

        Right after start the dashboard answers before its job agent does; such a refusal creates
        no job, so submitting again is safe.
        """
        deadline = time.monotonic() + agent_wait_s
        while True:
            proc = subprocess.run(["ray", "job", "submit", "--address", self.dashboard_url,
                                   "--working-dir", str(working_dir), "--", *entrypoint],
                                  env=self.env, capture_output=True, text=True, timeout=timeout_s)
            if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
                return proc
            time.sleep(2.0)

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            group = self.process.pid  # start_new_session: the head leads its own process group
            # SIGTERM lets the processes flush their logs; a head's GCS, raylet and autoscaler then take
            # about 60 s to end on their own (Ray 2.60), so whatever of the group is left is killed.
            for sig, grace_s in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def token(self) -> str:
        return self.env.get("RAY_AUTH_TOKEN") or (Path(self.home) / ".ray" / "auth_token").read_text().strip()

    def status_text(self) -> str:
        """The text `ray status` prints, from the dashboard's cluster-status endpoint (with the token):
        a request, not a CLI process (~1.5 s of CPU each on 2 cores, taken from the jobs it watches)."""
        request = urllib.request.Request(f"{self.dashboard_url}/api/cluster_status?format=1",
                                         headers={"Authorization": f"Bearer {self.token()}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["data"]["clusterStatus"] or ""

    def active_node_types(self) -> dict[str, int]:
        """`ray status`'s "Active:" section: node type -> nodes up ({} before the first report)."""
        section = self.status_text().partition("Active:")[2].partition("Pending:")[0]
        return {name: int(count) for count, name in re.findall(r"^\s*(\d+)\s+(\S+)\s*$", section, flags=re.M)}

    def own_processes(self) -> list[str]:
        """Command lines of the processes still running that belong to this head (its temp dir)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if self.temp_dir in line:
                    found.append(line)
        return found
