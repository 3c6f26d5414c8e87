"""Shared fixtures: a small generated store (data + trained models) and live servers over it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.pg_cluster import PostgresCluster

REPO = Path(__file__).resolve().parent.parent


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the repository's scripts with this interpreter; fail the test with its output."""
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass(frozen=True)
class Artifacts:
    """A generated data folder and the models trained on it."""

    data_dir: Path
    model_dir: Path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Fresh mock data and models, made by the real scripts on a small store."""
    root = tmp_path_factory.mktemp("store")
    data_dir, model_dir = root / "data", root / "models"
    run_script("simulate_data.py", "--out-dir", str(data_dir), "--sessions", "4000", "--seed", "7")
    run_script("train.py", "--data-dir", str(data_dir), "--model-dir", str(model_dir))
    return Artifacts(data_dir, model_dir)


def settings_env(artifacts: Artifacts, database: Path) -> dict[str, str]:
    """FITTING_ROOM_* variables pointing a server at the generated store and its own database."""
    return {
        "FITTING_ROOM_DATA_DIR": str(artifacts.data_dir),
        "FITTING_ROOM_MODEL_DIR": str(artifacts.model_dir),
        "FITTING_ROOM_DATABASE": str(database),
    }


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def database(tmp_path: Path) -> str:
    """A fresh SQLite database (modules that test the store override it with `any_database`)."""
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture(params=BACKENDS)
def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on each back end in turn: a SQLite file, then an empty PostgreSQL database."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def client(artifacts: Artifacts, database: str) -> Iterator[TestClient]:
    """A TestClient over the real app with its lifespan running, on a fresh database."""
    from api import create_app
    from fitting_room.settings import Settings

    settings = Settings(data_dir=artifacts.data_dir, model_dir=artifacts.model_dir, database=database)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real `uvicorn api:app` process on a free port."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start(self) -> LiveServer:
        """Start the server and return once it reports startup complete."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            # uvicorn opens its port after startup completes; this line says it listens.
            if "Uvicorn running on" in line:
                # Keep draining so a chatty server never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise AssertionError("server exited before startup completed:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no chance to flush anything."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Terminate politely if still running."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


@pytest.fixture
def live_server(artifacts: Artifacts, tmp_path: Path) -> Iterator[LiveServer]:
    """A started uvicorn over the generated store with a fresh database."""
    server = LiveServer(settings_env(artifacts, tmp_path / "state.db")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole run."""
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """SQLAlchemy URL of a fresh, empty database of its own on the shared server."""
    return postgres.create_database(f"test_{uuid.uuid4().hex}")
