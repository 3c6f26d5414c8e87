"""End to end: a real uvicorn on a free port, driven over HTTP, including SIGKILL and concurrency."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
import requests

from tests.conftest import REPO, Artifacts, LiveServer, settings_env

pytestmark = pytest.mark.e2e
ITEMS = ["sku-0042", "sku-0015"]


def floor(base_url: str) -> tuple[Any, ...]:
    body = requests.get(f"{base_url}/rooms/status", timeout=30).json()
    rooms = tuple((r["room_id"], r["session_id"], r["entry_time"]) for r in body["rooms"])
    return rooms, tuple((w["session_id"], w["position"], w["arrived_at"]) for w in body["waitlist"])


def test_integration_script_passes_against_a_live_server(live_server: LiveServer):
    import subprocess

    result = subprocess.run(
        [sys.executable, "integration_test.py", "--base-url", live_server.base_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed, 0 failed" in result.stdout


def test_state_survives_kill_9(artifacts: Artifacts, tmp_path: Path):
    env = settings_env(artifacts, tmp_path / "state.db")
    server = LiveServer(env).start()
    try:
        url = server.base_url
        bodies = [requests.post(f"{url}/assign_room", json={"item_ids": ITEMS}, timeout=30).json() for _ in range(9)]
        requests.post(f"{url}/sessions/{bodies[7]['session_id']}/cancel", timeout=30).raise_for_status()
        first = bodies[0]
        released = requests.post(
            f"{url}/detect_anomaly",
            json={"session_id": first["session_id"], "room_id": first["room_id"], "exit_scans": ITEMS},
            timeout=30,
        ).json()
        assert released["next_assignment"]["session_id"] == bodies[6]["session_id"]
        before = floor(url)
        server.kill()
    finally:
        server.stop()
    restarted = LiveServer(env).start()
    try:
        assert floor(restarted.base_url) == before
        assert [w[0] for w in before[1]] == [bodies[8]["session_id"]]
        done = requests.get(f"{restarted.base_url}/sessions/{first['session_id']}", timeout=30).json()
        assert done["status"] == "completed"
    finally:
        restarted.stop()


def test_thirty_concurrent_customers_never_share_a_room(live_server: LiveServer):
    barrier = Barrier(30)

    def arrive(_: int) -> dict[str, Any]:
        barrier.wait()
        response = requests.post(f"{live_server.base_url}/assign_room", json={"item_ids": ITEMS}, timeout=60)
        response.raise_for_status()
        return dict(response.json())

    with ThreadPoolExecutor(30) as pool:
        bodies = list(pool.map(arrive, range(30)))
    seated = [b for b in bodies if b["status"] == "assigned"]
    waiting = [b for b in bodies if b["status"] == "waitlisted"]
    assert len(seated) == 6
    assert len({b["room_id"] for b in seated}) == 6
    assert sorted(b["position"] for b in waiting) == list(range(1, 25))
    status = requests.get(f"{live_server.base_url}/rooms/status", timeout=30).json()
    assert sorted(r["session_id"] for r in status["rooms"]) == sorted(b["session_id"] for b in seated)
    assert [w["position"] for w in status["waitlist"]] == list(range(1, 25))
