"""api.py's own request handling on the hot routes: bodies and keys checked without FastAPI's solving, and state
changes of a store leaving the event loop one at a time."""

from __future__ import annotations

import gc
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import create_app
from fitting_room.rooms import DEFAULT_STORE
from fitting_room.settings import Settings
from tests.conftest import Artifacts
from tests.test_api import ITEMS, README_ANOMALY_BODY, floor

SELF_VALIDATED = {
    "/predict_duration": ("PredictDurationRequest", False),
    "/assign_room": ("AssignRoomRequest", True),
    "/detect_anomaly": ("DetectAnomalyRequest", True),
}
BODIES: dict[str, dict[str, Any]] = {
    "/predict_duration": {"item_ids": ITEMS},
    "/assign_room": {"item_ids": ITEMS},
    "/detect_anomaly": README_ANOMALY_BODY,
}


@pytest.mark.parametrize("path", SELF_VALIDATED)
@pytest.mark.parametrize(
    ("content", "headers", "error_type"),
    [
        ('{"item_ids": ["sku-0042"]}', {"Content-Type": "text/plain"}, "content_type"),
        ('{"item_ids": ["sku-0042"]}', {}, "content_type"),
        ("", {"Content-Type": "application/json"}, "missing"),
        (b"\xff{G\x04", {"Content-Type": "application/json"}, "json_invalid"),
        ("{bad", {"Content-Type": "application/json"}, "json_invalid"),
    ],
)
def test_a_body_that_is_not_json_is_a_422_located_at_the_body_and_changes_nothing(
    client: TestClient, path: str, content: str | bytes, headers: dict[str, str], error_type: str
):
    before = floor(client)
    response = client.post(path, content=content, headers=headers)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["type"] == error_type
    assert error["loc"][0] == "body"
    assert error["msg"]
    assert floor(client) == before


@pytest.mark.parametrize("path", SELF_VALIDATED)
def test_field_errors_are_located_under_body_as_for_a_declared_body(client: TestClient, path: str):
    response = client.post(path, json={**BODIES[path], "item_ids": 5, "entry_scans": 5})
    assert response.status_code == 422
    locations = [tuple(e["loc"]) for e in response.json()["detail"]]
    assert ("body", "item_ids") in locations or ("body", "entry_scans") in locations
    assert all(loc[0] == "body" for loc in locations)


def test_a_json_media_type_with_parameters_or_a_json_suffix_is_accepted(client: TestClient):
    for content_type in ("application/json; charset=utf-8", "application/vnd.kiosk+json"):
        response = client.post(
            "/predict_duration", content='{"item_ids": ["sku-0042"]}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/assign_room", "/detect_anomaly"])
@pytest.mark.parametrize(("key", "error_type"), [("", "string_too_short"), ("k" * 201, "string_too_long")])
def test_an_idempotency_key_out_of_bounds_is_a_422_and_changes_nothing(
    client: TestClient, path: str, key: str, error_type: str
):
    before = floor(client)
    response = client.post(path, json=BODIES[path], headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"]) == (error_type, ["header", "Idempotency-Key"])
    assert floor(client) == before


def test_the_longest_idempotency_key_is_accepted_and_replays(client: TestClient):
    headers = {"Idempotency-Key": "k" * 200}
    first = client.post("/assign_room", json={"item_ids": ITEMS}, headers=headers)
    again = client.post("/assign_room", json={"item_ids": ITEMS}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_openapi_still_describes_the_bodies_keys_and_headers_the_routes_read_themselves(client: TestClient):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, (model, idempotent) in SELF_VALIDATED.items():
        operation = spec["paths"][path]["post"]
        body = operation["requestBody"]
        assert body["required"] is True
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert schemas[model]["properties"]
        assert operation["security"] == [{"APIKeyHeader": []}]
        headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        assert ("Idempotency-Key" in headers) is idempotent
        if idempotent:
            assert headers["Idempotency-Key"]["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}
    # Every reference in the document resolves (nested models of the self-validated bodies included).
    assert all(ref.rsplit("/", 1)[1] in schemas for ref in _refs(spec))


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_changes_of_a_store_leave_the_event_loop_one_at_a_time(client: TestClient, monkeypatch: pytest.MonkeyPatch):
    service = client.app.state.ctx.stores[DEFAULT_STORE].service  # type: ignore[attr-defined]
    real_assign = service.assign
    lock = threading.Lock()
    inside = [0]
    most_inside = [0]
    second_arrived = threading.Event()

    def assign(*args: Any, **kwargs: Any) -> Any:
        with lock:
            inside[0] += 1
            most_inside[0] = max(most_inside[0], inside[0])
            first = inside[0] == 1
            if not first:
                second_arrived.set()
        try:
            if first:
                # Held open long enough for a second change to enter, if anything would let it.
                second_arrived.wait(timeout=1.0)
            return real_assign(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(service, "assign", assign)
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda _: client.post("/assign_room", json={"item_ids": ITEMS}).status_code, range(4)))
    assert statuses == [200] * 4
    assert most_inside[0] == 1
    assert not second_arrived.is_set()


def _exit_while_a_change_holds_the_floor(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]
) -> tuple[int, dict[str, Any], list[str]]:
    """POST /detect_anomaly while the test holds the store's floor, then let go; (status, body, pool threads used)."""
    import api

    pool_calls: list[str] = []
    real_run_sync = api.anyio.to_thread.run_sync

    async def counting_run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        pool_calls.append(getattr(func, "__name__", repr(func)))
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(api.anyio.to_thread, "run_sync", counting_run_sync)
    service = client.app.state.ctx.stores[DEFAULT_STORE].service  # type: ignore[attr-defined]
    real_analyse = service.analyse_if_unknown
    looked = threading.Event()

    def analyse_if_unknown(*args: Any, **kwargs: Any) -> Any:
        looked.set()
        return real_analyse(*args, **kwargs)

    monkeypatch.setattr(service, "analyse_if_unknown", analyse_if_unknown)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with service.store.locked():
            pending = pool.submit(client.post, "/detect_anomaly", json=body)
            assert looked.wait(timeout=30), "the request never looked at the floor"
            assert not pending.done()
        response = pending.result(timeout=30)
    return response.status_code, response.json(), pool_calls


def test_an_exit_while_a_change_holds_the_floor_goes_to_the_change_thread_without_a_waiting_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
):
    occupant = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    body = {"session_id": occupant["session_id"], "room_id": occupant["room_id"], "exit_scans": ITEMS}
    service = client.app.state.ctx.stores[DEFAULT_STORE].service  # type: ignore[attr-defined]
    monkeypatch.setattr(service, "seen", lambda _session_id: False)  # as if another replica had seated them
    status, answer, pool_calls = _exit_while_a_change_holds_the_floor(client, monkeypatch, body)
    assert status == 200, answer
    assert answer["room_released"] is True
    assert pool_calls == []
    rooms = {r["room_id"]: r["session_id"] for r in client.get("/rooms/status").json()["rooms"]}
    assert rooms[occupant["room_id"]] is None


def test_an_unknown_session_checked_while_the_floor_is_held_is_still_only_analysed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
):
    before = floor(client)
    status, answer, pool_calls = _exit_while_a_change_holds_the_floor(client, monkeypatch, README_ANOMALY_BODY)
    assert status == 200, answer
    assert answer["room_released"] is False
    assert answer["missing_items"] == ["sku-0015"]
    assert pool_calls == []
    assert floor(client) == before


def test_releasing_a_customer_this_process_seated_goes_straight_to_the_change_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
):
    occupant = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    service = client.app.state.ctx.stores[DEFAULT_STORE].service  # type: ignore[attr-defined]

    def no_second_look(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a session this process seated was looked up again")

    monkeypatch.setattr(service, "analyse_if_unknown", no_second_look)
    body = {"session_id": occupant["session_id"], "room_id": occupant["room_id"], "exit_scans": ITEMS}
    answer = client.post("/detect_anomaly", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["room_released"] is True
    monkeypatch.undo()
    again = client.post("/detect_anomaly", json=body)
    assert again.status_code == 409
    assert "is completed" in again.json()["detail"]
    # The change thread's own checks stand in for the skipped look: a known session and a room that is not there.
    seated = client.post("/assign_room", json={"item_ids": ITEMS}).json()
    assert service.seen(seated["session_id"])
    wrong_room = {"session_id": seated["session_id"], "room_id": "room_99", "exit_scans": ITEMS}
    missing = client.post("/detect_anomaly", json=wrong_room)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "unknown room 'room_99'"


def test_the_loaded_heap_is_hidden_from_the_collector_and_a_reload_lets_the_replaced_models_go(client: TestClient):
    assert gc.get_freeze_count() > 50_000  # the models, catalog and imports: full collections no longer walk them
    service = client.app.state.ctx.stores[DEFAULT_STORE].service  # type: ignore[attr-defined]
    replaced = weakref.ref(service.predictor)
    assert client.post("/models/reload").status_code == 200
    # Frozen objects are still freed by reference counting; a cycle through the models would keep them forever.
    assert replaced() is None
    assert client.post("/predict_duration", json={"item_ids": ITEMS}).status_code == 200


def test_the_heap_thaws_when_the_app_stops(artifacts: Artifacts, database: str):
    settings = Settings(data_dir=artifacts.data_dir, model_dir=artifacts.model_dir, database=database)
    with TestClient(create_app(settings)):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("path", SELF_VALIDATED)
def test_hot_routes_skip_fastapis_dependency_solving_and_keep_their_openapi_operation(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, path: str
):
    import fastapi.routing

    def no_solving(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError(f"{path} solved dependencies")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", no_solving)
    answer = client.post(path, json=BODIES[path])
    assert answer.status_code == 200, answer.text
    operation = client.get("/openapi.json").json()["paths"][path]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(SELF_VALIDATED[path][0])
    assert "200" in operation["responses"] and "422" in operation["responses"]
