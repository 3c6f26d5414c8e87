"""Two uvicorn replicas on one PostgreSQL database, as behind a load balancer (issue #8).

Customers arrive at both replicas at once; exits are reported to either. The database's row lock on the
store serialises the changes, so no room is shared, both replicas tell the same floor and every waiting
customer is promoted exactly once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Artifacts, LiveServer, settings_env

ITEMS = ["sku-0042", "sku-0015"]
ROOMS = [{"room_id": f"room_{i}", "max_items": 8} for i in range(1, 5)]
CUSTOMERS = 40


@pytest.fixture
def replicas(artifacts: Artifacts, tmp_path: Path, postgres_url: str) -> Iterator[list[LiveServer]]:
    rooms_file = tmp_path / "rooms.json"
    rooms_file.write_text(json.dumps(ROOMS))
    env = settings_env(artifacts, Path("unused")) | {
        "FITTING_ROOM_DATABASE": postgres_url,
        "FITTING_ROOM_ROOMS_FILE": str(rooms_file),
    }
    servers = [LiveServer(env), LiveServer(env)]
    # Both start on the empty database at once: migrations and the rooms sync must not collide.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(LiveServer.start, servers))
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def post(server: LiveServer, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = requests.post(server.base_url + path, json=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return dict(response.json())


def floor(server: LiveServer) -> tuple[Any, ...]:
    body = requests.get(server.base_url + "/rooms/status", timeout=60).json()
    rooms = tuple((r["room_id"], r["session_id"]) for r in body["rooms"])
    return rooms, tuple((w["session_id"], w["position"]) for w in body["waitlist"])


def release(server: LiveServer, room_id: str, session_id: str) -> dict[str, Any]:
    body = {"session_id": session_id, "room_id": room_id, "exit_scans": ITEMS, "actual_duration": 10.0}
    return post(server, "/detect_anomaly", body)


def test_two_replicas_share_one_floor(replicas: list[LiveServer]):
    a, b = replicas
    with ThreadPoolExecutor(16) as pool:
        arrivals = list(
            pool.map(lambda i: post(replicas[i % 2], "/assign_room", {"item_ids": ITEMS}), range(CUSTOMERS))
        )

    seated = [r for r in arrivals if r["status"] == "assigned"]
    waiting = [r for r in arrivals if r["status"] == "waitlisted"]
    assert len(seated) == len(ROOMS) and len({r["room_id"] for r in seated}) == len(ROOMS)
    assert sorted(r["position"] for r in waiting) == list(range(1, CUSTOMERS - len(ROOMS) + 1))
    assert floor(a) == floor(b)

    promoted: list[str] = []
    completed: list[str] = []
    while True:
        rooms, _line = floor(a)
        occupied = [(room_id, session_id) for room_id, session_id in rooms if session_id]
        if not occupied:
            break
        # Every occupant leaves at once, their exits reported to alternating replicas.
        servers = [replicas[i % 2] for i in range(len(occupied))]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(release, servers, [r for r, _ in occupied], [s for _, s in occupied]))
        completed += [r["session_id"] for r in results]
        promoted += [r["next_assignment"]["session_id"] for r in results if r["next_assignment"]]
        assert floor(a) == floor(b)

    assert Counter(promoted) == Counter(r["session_id"] for r in waiting)  # each exactly once
    assert Counter(completed) == Counter(r["session_id"] for r in arrivals)
    assert floor(b) == (tuple((room["room_id"], None) for room in ROOMS), ())


def test_a_retry_reaching_the_other_replica_has_no_second_effect(replicas: list[LiveServer]):
    key = {"Idempotency-Key": "kiosk-7-scan-0001"}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: post(replicas[i % 2], "/assign_room", {"item_ids": ITEMS}, **key), range(6)))
    assert len({a["session_id"] for a in answers}) == 1
    rooms, line = floor(replicas[1])
    assert [s for _room, s in rooms if s] == [answers[0]["session_id"]] and line == ()


def test_a_dashboard_on_one_replica_sees_changes_made_on_the_other(replicas: list[LiveServer]):
    a, b = replicas
    with requests.get(b.base_url + "/events", stream=True, timeout=30) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        ready = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
        assert set(ready) == {"last_event_id"}
        seated = post(a, "/assign_room", {"item_ids": ITEMS})
        data = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))
    assert data["kind"] == "session_assigned"
    assert data["payload"]["session_id"] == seated["session_id"]
