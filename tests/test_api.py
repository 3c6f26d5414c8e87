"""The HTTP contract through TestClient with the lifespan running over real trained models, on both back ends."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

ITEMS = ["sku-0042", "sku-0015"]
README_ANOMALY_BODY = {
    "session_id": "some-unique-session-id",
    "room_id": "room_1",
    "actual_duration": 25.5,
    "predicted_duration": 12.0,
    "entry_scans": ["sku-0042", "sku-0015"],
    "exit_scans": ["sku-0042"],
    "entry_time": "2026-12-04T14:30:00+00:00",
}


@pytest.fixture
def database(any_database: str) -> str:
    """Every API test runs on SQLite and on PostgreSQL."""
    return any_database


def floor(client: TestClient) -> tuple[Any, ...]:
    """Who is in which room and who waits where: what an error must leave untouched."""
    body = client.get("/rooms/status").json()
    rooms = tuple((r["room_id"], r["session_id"]) for r in body["rooms"])
    return rooms, tuple((w["session_id"], w["position"]) for w in body["waitlist"])


def assign(client: TestClient, items: list[str] = ITEMS, **extra: Any) -> dict[str, Any]:
    response = client.post("/assign_room", json={"item_ids": items, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


def fill_rooms(client: TestClient) -> list[dict[str, Any]]:
    """Assign until the first customer is waitlisted; returns every assignment body."""
    bodies: list[dict[str, Any]] = []
    while not bodies or bodies[-1]["status"] == "assigned":
        bodies.append(assign(client))
    return bodies


def test_welcome(client: TestClient):
    body = client.get("/").json()
    assert body["docs"] == "/docs"
    assert body["version"]


def test_docs_describe_every_field_with_examples(client: TestClient):
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/predict_duration",
        "/assign_room",
        "/rooms/status",
        "/sessions/{session_id}",
        "/sessions/{session_id}/cancel",
        "/detect_anomaly",
        "/alerts",
        "/alerts/{alert_id}/resolve",
    } <= paths
    for name, schema in spec["components"]["schemas"].items():
        if name.startswith(("HTTPValidationError", "ValidationError")):
            continue
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"
    request_schemas = ["PredictDurationRequest", "AssignRoomRequest", "DetectAnomalyRequest"]
    for name in request_schemas:
        for field, prop in spec["components"]["schemas"][name]["properties"].items():
            assert "examples" in prop, f"{name}.{field} has no example"


def test_predict_duration_readme_body(client: TestClient):
    response = client.post("/predict_duration", json={"item_ids": ITEMS, "entry_time": "2026-12-04T14:30:00+00:00"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["interval"]["low"] <= body["predicted_duration"] <= body["interval"]["high"]
    assert body["interval"]["level"] == 0.9
    assert body["unknown_item_ids"] == []


def test_predict_duration_level_and_unknown_and_case_variants(client: TestClient):
    wide = client.post("/predict_duration", json={"item_ids": ITEMS, "level": 0.99}).json()
    narrow = client.post("/predict_duration", json={"item_ids": ITEMS, "level": 0.5}).json()
    assert wide["interval"]["high"] - wide["interval"]["low"] > narrow["interval"]["high"] - narrow["interval"]["low"]
    variant = client.post("/predict_duration", json={"item_ids": [" SKU-0042", "sku-0015 "]}).json()
    assert variant["unknown_item_ids"] == []
    unknown = client.post("/predict_duration", json={"item_ids": ["sku-0042", "no-such-item"]}).json()
    assert unknown["unknown_item_ids"] == ["no-such-item"]
    assert unknown["predicted_duration"] > 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"item_ids": []}, "at least 1"),
        ({"item_ids": ["sku-0001"] * 51}, "at most 50"),
        ({"item_ids": ["x" * 65]}, "at most 64"),
        ({"item_ids": ["   "]}, "at least 1"),
        ({"item_ids": ITEMS, "entry_time": "yesterday"}, "datetime"),
        ({"item_ids": ITEMS, "level": 0.3}, "greater than or equal"),
        ({"items": ITEMS}, "item_ids"),
    ],
)
def test_predict_duration_rejects_bad_input(client: TestClient, body: dict[str, Any], fragment: str):
    response = client.post("/predict_duration", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_assign_then_waitlist_then_promotion(client: TestClient):
    bodies = fill_rooms(client)
    seated, waiting = bodies[:-1], bodies[-1]
    assert len(seated) == 6 == len({b["room_id"] for b in seated})
    assert all(b["estimated_wait"] == 0 and b["position"] is None for b in seated)
    assert waiting["position"] == 1
    assert waiting["room_id"] is None
    assert waiting["estimated_wait"] > 0
    second = assign(client)
    assert second["position"] == 2
    assert second["estimated_wait"] >= waiting["estimated_wait"]

    status = client.get("/rooms/status").json()
    assert [w["session_id"] for w in status["waitlist"]] == [waiting["session_id"], second["session_id"]]
    assert all(r["status"] == "occupied" and r["predicted_free_at"] for r in status["rooms"])
    assert status["at"].endswith("+00:00")

    first = seated[0]
    response = client.post(
        "/detect_anomaly",
        json={"session_id": first["session_id"], "room_id": first["room_id"], "exit_scans": ITEMS},
    )
    assert response.status_code == 200, response.text
    released = response.json()
    assert released["room_released"] is True
    assert released["next_assignment"] == {"session_id": waiting["session_id"], "room_id": first["room_id"]}
    promoted = client.get(f"/sessions/{waiting['session_id']}").json()
    assert promoted["status"] == "assigned"
    assert promoted["room_id"] == first["room_id"]
    assert client.get(f"/sessions/{second['session_id']}").json()["position"] == 1
    done = client.get(f"/sessions/{first['session_id']}").json()
    assert done["status"] == "completed"
    assert done["exit_scans"] == ITEMS
    assert done["anomaly"]["missing_items"] == []


def test_cancel_closes_up_the_line(client: TestClient):
    fill_rooms(client)
    second, third = assign(client), assign(client)
    first_waiting = client.get("/rooms/status").json()["waitlist"][0]["session_id"]
    response = client.post(f"/sessions/{second['session_id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert client.get(f"/sessions/{third['session_id']}").json()["position"] == 2
    assert client.get(f"/sessions/{first_waiting}").json()["position"] == 1


def test_cancel_errors_change_nothing(client: TestClient):
    seated = fill_rooms(client)[0]
    before = floor(client)
    missing = client.post("/sessions/nope/cancel")
    assert missing.status_code == 404
    assert "unknown session" in missing.json()["detail"]
    conflict = client.post(f"/sessions/{seated['session_id']}/cancel")
    assert conflict.status_code == 409
    assert "not waiting" in conflict.json()["detail"]
    assert floor(client) == before


def test_unknown_session_lookup_is_404(client: TestClient):
    response = client.get("/sessions/does-not-exist")
    assert response.status_code == 404
    assert "unknown session" in response.json()["detail"]


def test_too_many_items_for_any_room(client: TestClient):
    before = floor(client)
    response = client.post("/assign_room", json={"item_ids": [f"sku-{i:04d}" for i in range(13)]})
    assert response.status_code == 422
    assert "largest takes 12 items" in response.json()["detail"]
    assert floor(client) == before


def test_readme_anomaly_example_is_analysis_only(client: TestClient):
    seated = assign(client)
    before = floor(client)
    response = client.post("/detect_anomaly", json=README_ANOMALY_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["missing_items"] == ["sku-0015"]
    assert body["room_released"] is False
    assert body["next_assignment"] is None
    assert any(r["code"] == "missing_items" and "sku-0015" in r["message"] for r in body["reasons"])
    assert floor(client) == before
    assert seated["room_id"]


@pytest.mark.parametrize(
    ("change", "status", "fragment"),
    [
        ({"room_id": "room_99"}, 404, "unknown room"),
        ({"actual_duration": -1}, 422, "greater than or equal"),
        ({"entry_scans": []}, 422, "at least 1"),
        ({"exit_time": "not-a-time"}, 422, "datetime"),
        ({"exit_scans": ["sku-0001"] * 51}, 422, "at most 50"),
    ],
)
def test_detect_anomaly_errors_change_nothing(client: TestClient, change: dict[str, Any], status: int, fragment: str):
    fill_rooms(client)
    before = floor(client)
    response = client.post("/detect_anomaly", json={**README_ANOMALY_BODY, **change})
    assert response.status_code == status
    assert fragment in response.text
    assert floor(client) == before


def test_releasing_from_the_wrong_room_or_twice_is_a_conflict(client: TestClient):
    bodies = fill_rooms(client)
    a, b, waiting = bodies[0], bodies[1], bodies[-1]
    before = floor(client)
    for session, room in ((a, b["room_id"]), (waiting, a["room_id"])):
        response = client.post(
            "/detect_anomaly",
            json={"session_id": session["session_id"], "room_id": room, "exit_scans": ITEMS},
        )
        assert response.status_code == 409
        assert "not in" in response.json()["detail"]
    assert floor(client) == before
    ok = client.post(
        "/detect_anomaly", json={"session_id": a["session_id"], "room_id": a["room_id"], "exit_scans": ITEMS}
    )
    assert ok.status_code == 200
    after = floor(client)
    again = client.post(
        "/detect_anomaly", json={"session_id": a["session_id"], "room_id": a["room_id"], "exit_scans": ITEMS}
    )
    assert again.status_code == 409
    assert "completed" in again.json()["detail"]
    assert floor(client) == after


def test_event_time_runs_forward_only(client: TestClient):
    seated = assign(client, timestamp="2026-12-04T10:00:00+00:00")
    early = client.post(
        "/detect_anomaly",
        json={
            "session_id": seated["session_id"],
            "room_id": seated["room_id"],
            "exit_scans": ITEMS,
            "exit_time": "2026-12-04T09:59:00+00:00",
        },
    )
    assert early.status_code == 422
    assert "before the entry time" in early.json()["detail"]
    on_time = client.post(
        "/detect_anomaly",
        json={
            "session_id": seated["session_id"],
            "room_id": seated["room_id"],
            "exit_scans": ITEMS,
            "exit_time": "2026-12-04T10:14:00+00:00",
        },
    )
    assert on_time.json()["actual_duration"] == pytest.approx(14)


def test_missing_item_raises_an_alert_staff_can_resolve(client: TestClient):
    seated = assign(client)
    response = client.post(
        "/detect_anomaly",
        json={"session_id": seated["session_id"], "room_id": seated["room_id"], "exit_scans": []},
    )
    body = response.json()
    assert body["missing_items"] == ITEMS
    assert body["is_anomaly"] is True, "every item missing must reach staff"
    alerts = client.get("/alerts").json()["alerts"]
    assert alerts[0]["session_id"] == seated["session_id"]
    assert alerts[0]["alert_id"] == body["alert_id"]
    assert alerts[0]["status"] == "open"
    resolved = client.post(f"/alerts/{body['alert_id']}/resolve", json={"outcome": "theft", "note": "seen"})
    assert resolved.status_code == 200
    assert resolved.json()["outcome"] == "theft"
    assert client.get("/alerts", params={"status": "open"}).json()["alerts"] == []
    assert client.post("/alerts/999/resolve", json={"outcome": "theft"}).status_code == 404
    assert client.post("/alerts/1/resolve", json={"outcome": "shrug"}).status_code == 422
