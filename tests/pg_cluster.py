"""A throwaway PostgreSQL server for tests, run from Debian's binaries in a temporary directory."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

# Debian installs each major version side by side; initdb is what `make postgres-deps` checks for.
DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root the server runs as this account, which Debian's package creates.
SYSTEM_USER = "postgres"


class PostgresNotInstalledError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: Debian's newest version, else pg_config's."""
    versions = sorted(
        (path.parent for path in DEBIAN_ROOT.glob("*/bin/initdb")), key=lambda bindir: _version_key(bindir.parent.name)
    )
    if versions:
        return versions[-1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = Path(
            subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
        if (bindir / "initdb").is_file():
            return bindir
    raise PostgresNotInstalledError(
        f"PostgreSQL server binaries (initdb) not found under {DEBIAN_ROOT}/*/bin nor by `pg_config --bindir`: "
        "run `make postgres-deps`"
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A private PostgreSQL server on 127.0.0.1 at a free port, with trust auth, deleted on stop()."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.port = 0
        self.root: Path | None = None
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory (PGDATA)."""
        assert self.root is not None, "cluster not started"
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log, quoted in errors when it fails to start."""
        assert self.root is not None, "cluster not started"
        return self.root / "server.log"

    def start(self) -> PostgresCluster:
        """initdb a fresh cluster in a new temporary directory, start it, return once it accepts connections."""
        # Not pytest's tmp_path: under root that is a 0700 directory the postgres account cannot enter.
        self.root = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
        if self._as_root:
            shutil.chown(self.root, SYSTEM_USER, SYSTEM_USER)
        try:
            self._run(
                "initdb",
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                # The C locale exists on every machine (no `locales` package needed) and sorts the same everywhere.
                "--locale=C",
                # Durability of a directory deleted after the run is worth nothing; skipping fsync saves seconds.
                "--no-sync",
            )
            self.port = _free_port()
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                # The socket stays inside the temporary directory instead of the shared /var/run/postgresql.
                "unix_socket_directories": f"'{self.root}'",
            }
            with (self.data_dir / "postgresql.conf").open("a") as conf:
                conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
            # -w: pg_ctl itself waits until the server accepts connections (or gives up after its timeout).
            self._run("pg_ctl", "start", "-w", f"--pgdata={self.data_dir}", f"--log={self.log_file}")
        except BaseException:
            # pg_ctl may time out with the server still coming up; stop() handles that case as well.
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (open sessions are rolled back), then delete the directory."""
        if self.root is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-w", "--mode=fast", f"--pgdata={self.data_dir}")
        finally:
            self._remove()

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of one database on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        # CREATE DATABASE cannot run inside a transaction block.
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        options: dict[str, Any] = {}
        if self._as_root:
            # Drop root's supplementary groups too, not only the user id.
            options = {"user": SYSTEM_USER, "group": SYSTEM_USER, "extra_groups": []}
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120, check=False, **options
        )
        if result.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}".rstrip()
            )

    def _remove(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
