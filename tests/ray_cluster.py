"""Test support: a local two-node Ray cluster (a head and a worker node started with `ray start` on this
machine, one CPU and a small object store each), under a dedicated temp dir and free ports, so that the
test can kill the worker node and stop exactly the processes it started (never `ray stop`, which stops
every Ray process of the user). Raises `RayUnavailable` with the reason when Ray cannot start here."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's floor is 75 MiB


class RayUnavailable(RuntimeError):
    """Ray is not installed, or a node could not start; the message says why."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _with_descendants(roots: set[int]) -> set[int]:
    parents = {int(p): _parent(int(p)) for p in os.listdir("/proc") if p.isdigit()}
    found, grew = set(roots), True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def _belongs(cmdline: str, temp_dir: str, gcs_port: int) -> bool:
    return temp_dir in cmdline or ("ray" in cmdline and re.search(rf"--address=\S+:{gcs_port}(\s|$)", cmdline) is not None)


def _kill(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@dataclass
class LocalRayCluster:
    temp_dir: Path
    ip: str
    gcs_port: int
    worker_manager_port: int = 0
    env: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.gcs_port}"

    def _ray(self, *args: str) -> None:
        ray = Path(sys.executable).parent / "ray"
        try:
            result = subprocess.run([str(ray), "start", *args], capture_output=True, text=True, timeout=120, env=self.env)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RayUnavailable(f"`ray start` could not run: {exc}") from exc
        if result.returncode != 0:
            raise RayUnavailable(f"`ray start` failed ({result.returncode}): {(result.stderr or result.stdout)[-800:]}")

    def _ports(self, prefix: str = "") -> list[str]:
        low = _free_port()
        return [f"--node-manager-port={_free_port() if not prefix else self.worker_manager_port}",
                f"--object-manager-port={_free_port()}", f"--metrics-export-port={_free_port()}",
                f"--runtime-env-agent-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                f"--dashboard-agent-listen-port={_free_port()}", f"--min-worker-port={low}",
                f"--max-worker-port={low + 40}"]

    def start_head(self) -> None:
        self._ray("--head", f"--port={self.gcs_port}", f"--node-ip-address={self.ip}", "--num-cpus=1",
                  f"--object-store-memory={OBJECT_STORE_BYTES}", f"--temp-dir={self.temp_dir}",
                  "--include-dashboard=false", f"--dashboard-port={_free_port()}", "--disable-usage-stats",
                  f"--ray-client-server-port={_free_port()}", *self._ports())

    def add_worker(self) -> None:
        self.worker_manager_port = _free_port()
        self._ray(f"--address={self.address}", f"--node-ip-address={self.ip}", "--num-cpus=1",
                  f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats", *self._ports("worker"))

    def worker_node_pids(self) -> set[int]:
        """The worker node's raylet and every process under it (its agents and Ray workers)."""
        marker = f"--node_manager_port={self.worker_manager_port}"
        raylets = {int(p) for p in os.listdir("/proc") if p.isdigit() and marker in _cmdline(int(p))}
        return _with_descendants(raylets)

    def kill_worker_node(self) -> set[int]:
        pids = self.worker_node_pids()
        _kill(pids)
        return pids

    def stop(self) -> None:
        """SIGKILL every process of this cluster: those naming its temp dir or its GCS port (the client
        server names the GCS by the machine's address, not the one given), and their descendants."""
        me = os.getpid()
        roots = {int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me
                 and _belongs(_cmdline(int(p)), str(self.temp_dir), self.gcs_port)}
        _kill(_with_descendants(roots) - {me})
        time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_cluster(env: dict) -> LocalRayCluster:
    """A head and one worker node; on failure everything started is stopped and RayUnavailable raised."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise RayUnavailable("Ray is not installed (pip install 'slatectl[ray]')") from exc
    # A short path: Ray's unix sockets live under the temp dir and a socket path is limited to 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="slr-", dir="/tmp"))
    cluster = LocalRayCluster(temp_dir, "127.0.0.1", _free_port(), env=env)
    try:
        cluster.start_head()
        cluster.add_worker()
    except BaseException:
        cluster.stop()
        raise
    return cluster
