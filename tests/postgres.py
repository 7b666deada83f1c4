"""A throwaway PostgreSQL cluster for the tests that need one: initdb in a temporary
directory, started on a free port on 127.0.0.1, run as a non-root user (PostgreSQL
refuses to run as root; as root, the cluster runs as ``nobody``). Each test gets a
database of its own.

The server binaries are looked for on PATH, then in Debian's /usr/lib/postgresql/N/bin.
None found: the tests skip and say why, except under CI (``CI`` set), where `.ci/run`
installs Debian's postgresql, so a missing server is a failure, not a silent skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import free_port


def server_bin() -> Path | None:
    """The folder of initdb, pg_ctl and postgres (the newest Debian version if several)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


class Cluster:
    """One started cluster; ``new_database()`` gives each test an empty database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="conductor-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self._user = {"user": "nobody", "group": "nogroup"}
            shutil.chown(self.dir, "nobody", "nogroup")
        self._n = 0

    def _run(self, *args: str) -> None:
        out = subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                             text=True, timeout=120, cwd=self.dir, **self._user)
        if out.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {out.stdout}\n{out.stderr}")

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-U", "conductor", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        # fsync off: a test cluster needs no protection from a machine crash (a killed
        # client still loses nothing acknowledged: commits stay synchronous).
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", f"-p {self.port} -k {self.dir} "
                  "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                  "start")
        return self

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://conductor@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        import psycopg

        self._n += 1
        name = f"test_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def copy_without_snapshots(self, url: str) -> str:
        """A copy of a database (no one connected to it) with its posterior snapshots
        deleted: opening it rebuilds the learned state from every committed event."""
        import psycopg

        self._n += 1
        name = f"test_{self._n}"
        source = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {source}")
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute("DELETE FROM posterior_snapshots")
        return self.url(name)

    def restart(self) -> None:
        """Stop the server (fast: connections are cut) and start it again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-m",
                  "fast", "-w", "-t", "60", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster() -> Cluster:
    bindir = server_bin()
    if bindir is None:
        reason = ("no PostgreSQL server binary (initdb) on PATH or in "
                  "/usr/lib/postgresql/*/bin; install Debian's postgresql to run these tests")
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run them: .ci/run installs it)")
        pytest.skip(reason)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed: pip install 'conductor-router[postgres]'")
    return Cluster(bindir).start()
