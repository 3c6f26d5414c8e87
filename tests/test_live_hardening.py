"""Hardening against a real uvicorn: concurrent idempotent retries and graceful shutdown with requests in flight.

To have requests provably in flight at the same time, the test holds the database's write lock itself (SQLite
`BEGIN IMMEDIATE`): every change the server attempts waits on it. Requests are sent on their own connections
without waiting for answers; an answer on a fresh connection afterwards proves the server's single event loop
has read them all (it reads ready sockets in arrival order). Releasing the lock lets them proceed.
"""

from __future__ import annotations

import http.client
import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import Artifacts, LiveServer, settings_env

pytestmark = pytest.mark.e2e
ITEMS = ["sku-0042", "sku-0015"]
TIMEOUT = 60


class WatchedServer(LiveServer):
    """A LiveServer whose log can be waited on line by line, and which is listening once started."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.logged = threading.Condition()

    def start(self) -> WatchedServer:
        """Start, then wait for the socket too: uvicorn binds it only after "Application startup complete"."""
        super().start()
        if not self.wait_for_log("Uvicorn running on"):
            self.stop()
            raise AssertionError("server never listened:\n" + "".join(self.log))
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            with self.logged:
                self.log.append(line)
                self.logged.notify_all()

    def wait_for_log(self, text: str, timeout: float = TIMEOUT) -> bool:
        """Block until a log line contains `text`; False on timeout."""
        with self.logged:
            return self.logged.wait_for(lambda: any(text in line for line in self.log), timeout)


@dataclass(frozen=True)
class Answer:
    """One HTTP response, read in full."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def send(
    base_url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> http.client.HTTPConnection:
    """Open a connection and send one request without waiting for the answer."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=TIMEOUT)
    payload = None if body is None else json.dumps(body)
    conn.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
    return conn


def answer(conn: http.client.HTTPConnection) -> Answer:
    """Read the answer to the request sent on `conn`, and close it."""
    try:
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def prove_received(base_url: str) -> None:
    """A fresh connection's answer: everything sent before it has been read by the server."""
    assert requests.get(f"{base_url}/healthz", timeout=TIMEOUT).status_code == 200


@contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Hold the SQLite write lock so every change the server attempts waits until the block ends."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=TIMEOUT)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Path of the server's SQLite file."""
    return tmp_path / "state.db"


@pytest.fixture
def server(artifacts: Artifacts, database: Path) -> Iterator[WatchedServer]:
    """A started uvicorn over a fresh database."""
    live = WatchedServer(settings_env(artifacts, database)).start()
    try:
        yield live
    finally:
        live.stop()


def ok(response: requests.Response) -> dict[str, Any]:
    """The JSON body of a 200 answer; anything else fails the test with the body."""
    assert response.status_code == 200, f"{response.request.method} {response.url}: {response.text}"
    return dict(response.json())


def floor(base_url: str) -> dict[str, Any]:
    """GET /rooms/status."""
    return ok(requests.get(f"{base_url}/rooms/status", timeout=TIMEOUT))


def test_five_concurrent_retries_of_an_assignment_have_one_effect(server: WatchedServer, database: Path):
    headers = {"Idempotency-Key": "kiosk-2-scan-777"}
    with write_lock(database):
        retries = [send(server.base_url, "POST", "/assign_room", {"item_ids": ITEMS}, headers) for _ in range(5)]
        prove_received(server.base_url)
    answers = [answer(conn) for conn in retries]

    assert [a.status for a in answers] == [200] * 5, [a.body for a in answers]
    assert len({a.body for a in answers}) == 1, "every retry gets the very same body"
    assert sorted(a.headers["idempotent-replayed"] for a in answers) == ["false"] + ["true"] * 4
    seated = answers[0].json()
    assert seated["status"] == "assigned"
    status = floor(server.base_url)
    assert [r["session_id"] for r in status["rooms"] if r["session_id"]] == [seated["session_id"]]
    assert status["waitlist"] == []


def test_five_concurrent_retries_of_a_release_have_one_effect(server: WatchedServer, database: Path):
    url = server.base_url
    seated = [ok(requests.post(f"{url}/assign_room", json={"item_ids": ITEMS}, timeout=TIMEOUT)) for _ in range(7)]
    first, waiting = seated[0], seated[6]
    assert waiting["status"] == "waitlisted"
    exit_report = {"session_id": first["session_id"], "room_id": first["room_id"], "exit_scans": ITEMS}
    headers = {"Idempotency-Key": "gate-1-exit-9001"}
    with write_lock(database):
        retries = [send(url, "POST", "/detect_anomaly", exit_report, headers) for _ in range(5)]
        prove_received(url)
    answers = [answer(conn) for conn in retries]

    assert [a.status for a in answers] == [200] * 5, [a.body for a in answers]
    assert len({a.body for a in answers}) == 1
    released = answers[0].json()
    assert released["room_released"] is True
    assert released["next_assignment"] == {"session_id": waiting["session_id"], "room_id": first["room_id"]}
    done = ok(requests.get(f"{url}/sessions/{first['session_id']}", timeout=TIMEOUT))
    assert done["status"] == "completed"
    status = floor(url)
    occupants = {r["room_id"]: r["session_id"] for r in status["rooms"]}
    assert occupants[first["room_id"]] == waiting["session_id"], "promoted once, nobody else"
    assert status["waitlist"] == []
    reused = requests.post(f"{url}/detect_anomaly", json={**exit_report, "exit_scans": []}, headers=headers, timeout=30)
    assert reused.status_code == 422
    assert "different request" in reused.json()["detail"]


def test_sigterm_lets_in_flight_requests_finish_and_keeps_their_changes(
    artifacts: Artifacts, server: WatchedServer, database: Path
):
    url = server.base_url
    assert server.process is not None
    with write_lock(database):
        assigns = [send(url, "POST", "/assign_room", {"item_ids": ITEMS[: 1 + i % 2]}) for i in range(9)]
        reads = [send(url, "GET", "/rooms/status") for _ in range(3)]
        prove_received(url)
        server.process.send_signal(signal.SIGTERM)
        assert server.wait_for_log("Waiting for connections to close"), "".join(server.log)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{url}/healthz", timeout=TIMEOUT)
        assert server.process.poll() is None, "the server waits for its in-flight requests"
    assigned = [answer(conn) for conn in assigns]
    statuses = [answer(conn) for conn in reads]
    # uvicorn re-raises the signal once it has shut down cleanly (older versions exit 0).
    assert server.process.wait(timeout=TIMEOUT) in (0, -signal.SIGTERM), "".join(server.log)
    assert server.wait_for_log("Application shutdown complete"), "".join(server.log)

    assert [a.status for a in assigned + statuses] == [200] * 12, [a.body for a in assigned + statuses]
    bodies = [a.json() for a in assigned]
    assert sorted(b["status"] for b in bodies) == ["assigned"] * 6 + ["waitlisted"] * 3
    restarted = WatchedServer(settings_env(artifacts, database)).start()
    try:
        for body in bodies:
            session = ok(requests.get(f"{restarted.base_url}/sessions/{body['session_id']}", timeout=TIMEOUT))
            assert (session["status"], session["room_id"]) == (body["status"], body["room_id"])
        status = floor(restarted.base_url)
        occupants = sorted(r["session_id"] for r in status["rooms"])
        assert occupants == sorted(b["session_id"] for b in bodies if b["status"] == "assigned")
        assert [w["position"] for w in status["waitlist"]] == [1, 2, 3]
        assert [w["session_id"] for w in status["waitlist"]] == [
            b["session_id"] for b in sorted(bodies, key=lambda b: b["position"] or 0) if b["position"]
        ]
    finally:
        restarted.stop()
