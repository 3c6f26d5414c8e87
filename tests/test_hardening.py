"""Shop-floor hardening over the real app: roles, limits, idempotency, health, metrics, request ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Artifacts

ITEMS = ["sku-0042", "sku-0015"]
KEYS = {"kiosk": "kiosk-key-0123456789", "staff": "staff-key-0123456789", "admin": "admin-key-0123456789"}
ROLE_ORDER = ["kiosk", "staff", "admin"]


@pytest.fixture
def secured(artifacts: Artifacts, tmp_path: Path) -> Iterator[TestClient]:
    from api import create_app
    from fitting_room.settings import Settings

    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({key: role for role, key in KEYS.items()}))
    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=artifacts.model_dir,
        database=str(tmp_path / "state.db"),
        api_keys_file=keys_file,
    )
    with TestClient(create_app(settings)) as client:
        yield client


# (method, path, body, least role); bodies are valid so an allowed call never answers 401/403.
MATRIX: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/predict_duration", {"item_ids": ITEMS}, "kiosk"),
    ("POST", "/assign_room", {"item_ids": ITEMS}, "kiosk"),
    ("GET", "/rooms/status", None, "kiosk"),
    ("GET", "/sessions/unknown", None, "kiosk"),
    ("POST", "/sessions/unknown/cancel", None, "kiosk"),
    (
        "POST",
        "/detect_anomaly",
        {"session_id": "x", "room_id": "room_1", "exit_scans": [], "entry_scans": ITEMS, "actual_duration": 3},
        "staff",
    ),
    ("GET", "/alerts", None, "staff"),
    ("POST", "/alerts/1/resolve", {"outcome": "theft"}, "staff"),
    ("GET", "/models", None, "staff"),
    ("POST", "/models/reload", None, "admin"),
    ("GET", "/dashboard/summary", None, "staff"),
    ("PUT", "/rooms", {"rooms": [{"room_id": f"room_{i}", "max_items": 12} for i in range(1, 7)]}, "admin"),
]


@pytest.mark.parametrize(("method", "path", "body", "least"), MATRIX)
def test_role_endpoint_matrix(secured: TestClient, method: str, path: str, body: Any, least: str):
    anonymous = secured.request(method, path, json=body)
    assert anonymous.status_code == 401
    assert "missing API key" in anonymous.json()["detail"]
    wrong = secured.request(method, path, json=body, headers={"X-API-Key": "not-a-key-0000000000"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "unknown API key"
    for role in ROLE_ORDER:
        response = secured.request(method, path, json=body, headers={"X-API-Key": KEYS[role]})
        if ROLE_ORDER.index(role) < ROLE_ORDER.index(least):
            assert response.status_code == 403, (role, response.text)
            assert f"needs '{least}'" in response.json()["detail"]
        else:
            assert response.status_code not in (401, 403), (role, response.text)


def test_event_stream_takes_the_key_as_query_parameter(secured: TestClient):
    assert secured.get("/events").status_code == 401
    kiosk = secured.get("/events", params={"api_key": KEYS["kiosk"]})
    assert kiosk.status_code == 403
    assert "needs 'staff'" in kiosk.json()["detail"]
    summary = secured.get("/dashboard/summary", params={"api_key": KEYS["staff"]})
    assert summary.status_code == 200


@pytest.mark.parametrize("path", ["/", "/docs", "/dashboard", "/openapi.json", "/healthz", "/readyz", "/metrics"])
def test_open_endpoints_need_no_key(secured: TestClient, path: str):
    assert secured.get(path).status_code == 200


def test_openapi_declares_the_key_scheme_and_root_says_auth_is_on(secured: TestClient):
    spec = secured.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    assert spec["paths"]["/assign_room"]["post"]["security"] == [{"APIKeyHeader": []}]
    assert secured.get("/").json()["authentication"] == "on"


def test_without_keys_the_service_is_open_and_says_so(client: TestClient):
    assert client.get("/").json()["authentication"] == "off"
    assert client.post("/models/reload").status_code == 200


def test_bodies_over_64_kib_are_refused_even_when_streamed(client: TestClient):
    big = json.dumps({"item_ids": ITEMS, "pad": "x" * 70_000}).encode()
    declared = client.post("/assign_room", content=big, headers={"content-type": "application/json"})
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    streamed = client.post("/assign_room", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert "larger than 65536 bytes" in streamed.json()["detail"]
    assert client.get("/rooms/status").json()["waitlist"] == []
    assert all(r["session_id"] is None for r in client.get("/rooms/status").json()["rooms"])


def test_idempotent_retry_returns_the_first_response_once(client: TestClient):
    headers = {"Idempotency-Key": "kiosk-7-scan-0001"}
    first = client.post("/assign_room", json={"item_ids": ITEMS}, headers=headers)
    retry = client.post("/assign_room", json={"item_ids": ITEMS}, headers=headers)
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json()
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert first.headers["Idempotent-Replayed"] == "false"
    occupied = [r for r in client.get("/rooms/status").json()["rooms"] if r["session_id"]]
    assert len(occupied) == 1
    other = client.post("/assign_room", json={"item_ids": ITEMS[:1]}, headers=headers)
    assert other.status_code == 422
    assert "different request" in other.json()["detail"]


def test_idempotent_release_and_cancel(client: TestClient):
    seated = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    body = {"session_id": seated["session_id"], "room_id": seated["room_id"], "exit_scans": ITEMS}
    headers = {"Idempotency-Key": "gate-1-exit-42"}
    first = client.post("/detect_anomaly", json=body, headers=headers)
    again = client.post("/detect_anomaly", json=body, headers=headers)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert client.post("/detect_anomaly", json=body).status_code == 409, "without the key it is a second exit"


def test_metrics_count_routes_not_sessions(client: TestClient):
    seated = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    client.get(f"/sessions/{seated['session_id']}")
    text = client.get("/metrics").text
    assert 'fitting_room_http_requests_total{method="POST",route="/assign_room",status="200"} 1.0' in text
    assert 'route="/sessions/{session_id}"' in text
    assert seated["session_id"] not in text
    assert 'fitting_room_assignments_total{outcome="assigned"} 1.0' in text
    assert "fitting_room_waitlist_length 0.0" in text
    assert 'fitting_room_model_info{model="duration_model.pkl"' in text


def test_request_id_is_echoed(client: TestClient):
    given = client.get("/healthz", headers={"X-Request-ID": "till-3-abc"})
    assert given.headers["X-Request-ID"] == "till-3-abc"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert len(made.headers["X-Request-ID"]) == 32


def test_readyz_and_models(client: TestClient):
    assert client.get("/readyz").json() == {"status": "ready", "problems": []}
    models = client.get("/models").json()
    assert models["loaded"] is True
    assert {m["name"] for m in models["models"]} == {"duration_model.pkl", "anomaly_model.pkl"}
    assert models["trained_at"]
    assert models["inference"] == "native", "`make test` builds the compiled tree walk the API must use"


def test_without_the_native_walk_the_api_scores_with_numpy_and_says_so(
    client: TestClient, artifacts: Artifacts, database: str, monkeypatch: pytest.MonkeyPatch
):
    from api import create_app
    from fitting_room import treewalk
    from fitting_room.settings import Settings

    body = {"item_ids": ["sku-0001", "sku-0002"], "entry_time": "2026-12-04T14:30:00+00:00"}
    exit_body = {
        "session_id": "never-seen",
        "room_id": client.get("/rooms/status").json()["rooms"][0]["room_id"],
        "entry_scans": ["sku-0001", "sku-0002"],
        "exit_scans": ["sku-0001"],
        "entry_time": "2026-12-04T14:30:00+00:00",
        "actual_duration": 41.0,
    }
    native = (client.post("/predict_duration", json=body).json(), client.post("/detect_anomaly", json=exit_body).json())
    monkeypatch.setattr(treewalk, "library", lambda: None)
    settings = Settings(data_dir=artifacts.data_dir, model_dir=artifacts.model_dir, database=database)
    with TestClient(create_app(settings)) as fallback:
        assert fallback.get("/models").json()["inference"] == "numpy"
        answers = (
            fallback.post("/predict_duration", json=body).json(),
            fallback.post("/detect_anomaly", json=exit_body).json(),
        )
    assert answers == native, "both paths give the same numbers"


def test_admin_room_configuration_promotes_into_new_rooms(client: TestClient):
    rooms = client.get("/rooms/status").json()["rooms"]
    seated = [client.post("/assign_room", json={"item_ids": ITEMS}).json() for _ in rooms]
    waiting = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    assert waiting["status"] == "waitlisted"
    config = [{"room_id": r["room_id"], "max_items": r["max_items"], "accessible": r["accessible"]} for r in rooms]
    config = [c for c in config if c["room_id"] != seated[0]["room_id"]]
    config.append({"room_id": "room_7", "max_items": 4, "accessible": False, "attributes": {"floor": 2}})
    response = client.put("/rooms", json={"rooms": config})
    assert response.status_code == 200, response.text
    assert response.json()["kept_occupied"] == [seated[0]["room_id"]]
    session = client.get(f"/sessions/{waiting['session_id']}").json()
    assert session["status"] == "assigned"
    assert session["room_id"] == "room_7"
    ids = [r["room_id"] for r in client.get("/rooms/status").json()["rooms"]]
    assert "room_7" in ids
    assert seated[0]["room_id"] in ids, "an occupied room is kept until its customer leaves"


def test_room_configuration_errors_change_nothing(client: TestClient):
    before = client.get("/rooms/status").json()["rooms"]
    duplicate = client.put(
        "/rooms", json={"rooms": [{"room_id": "a", "max_items": 3}, {"room_id": "a", "max_items": 4}]}
    )
    assert duplicate.status_code == 422
    assert "duplicate room_id a" in duplicate.json()["detail"]
    assert client.put("/rooms", json={"rooms": []}).status_code == 422
    assert client.put("/rooms", json={"rooms": [{"room_id": "a", "max_items": 0}]}).status_code == 422
    assert client.get("/rooms/status").json()["rooms"] == before
