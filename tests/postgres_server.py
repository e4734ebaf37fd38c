"""Test support: a throwaway PostgreSQL server in a temp dir, reachable only over a unix socket.

Used by the test-suite to run the registry tests against PostgreSQL as well as SQLite; usable by any
other test that needs a real server. Raises `PostgresUnavailable` (with the reason) when no server can
be started here, so callers can skip rather than fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SERVER_USER = "postgres"  # the server refuses to run as root; as root we run it as this user


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started in this environment; the message says why."""


@dataclass(frozen=True)
class PostgresServer:
    socket_dir: Path
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.socket_dir), port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def find_server_binaries() -> Path | None:
    """The bin directory holding initdb and pg_ctl: Debian's versioned dirs first, then PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(p), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    for directory in candidates:
        if all(os.access(Path(directory) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    return None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit()) or (0,)


def _free_port() -> int:
    # Only names the socket file (and shared-memory key); the server does not listen on TCP.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--", *command]
    return ["su", SERVER_USER, "-s", "/bin/sh", "-c", " ".join(f"'{part}'" for part in command)]


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(_as_server_user(command), capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresUnavailable(f"{what} could not run: {exc}") from exc
    if result.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-800:]}")


@contextmanager
def throwaway_postgres() -> Iterator[PostgresServer]:
    """Start a PostgreSQL server in a temp dir; stop it and delete everything on exit."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable("the psycopg driver is not installed (pip install 'psycopg[binary]')") from exc
    bin_dir = find_server_binaries()
    if bin_dir is None:
        raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin "
                                  "or on PATH; install them with .ci/postgres.sh")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError as exc:
            raise PostgresUnavailable(f"running as root and there is no {SERVER_USER!r} user to run the server") from exc
    base = Path(tempfile.mkdtemp(prefix="slatectl-pg-"))
    data, sockets, log = base / "data", base / "sock", base / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    pg_ctl = str(bin_dir / "pg_ctl")
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8",
              "--locale=C", "--no-sync"], "initdb")
        # Durability off: the server and its data are thrown away after the tests.
        options = (f"-k {sockets} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=50")
        try:
            _run([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"], "pg_ctl start")
        except PostgresUnavailable as exc:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise PostgresUnavailable(f"{exc}\n{tail}") from exc
        started = True
        yield PostgresServer(socket_dir=sockets, port=port, user=SERVER_USER)
    finally:
        if started:
            try:
                _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], "pg_ctl stop")
            except PostgresUnavailable:
                pass
        shutil.rmtree(base, ignore_errors=True)
