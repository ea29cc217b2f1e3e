"""A throwaway PostgreSQL cluster for the storage and queue tests (initdb + pg_ctl, ~1 s).

Skipped with a printed reason where no server binaries are installed.
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
from collections.abc import Iterator
from pathlib import Path

import pytest


def server_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, str(Path(found).resolve()))
    return Path(candidates[0]).parent if candidates else None


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="codegenapp-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.user = "codegenapp"
        # initdb refuses to run as root: run the server as the postgres user when we are root.
        self._run_as = "postgres" if os.geteuid() == 0 else None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self._run_as, "--", *args] if self._run_as else list(args)

    def start(self) -> None:
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(self._cmd(str(self.bin_dir / "initdb"), "-A", "trust", "-U", self.user, "-D",
                                 str(self.data), "--no-sync"), check=True, capture_output=True)
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off -c unix_socket_directories={self.root}"
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
                                 "-l", str(self.root / "log"), "-w", "start"), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        subprocess.run([str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        name], check=True, capture_output=True)
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb) not installed: PostgreSQL tests skipped")
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
    except (subprocess.CalledProcessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"could not start a throwaway PostgreSQL cluster: {exc} {detail.decode(errors='replace')}")
    yield cluster
    cluster.stop()
