"""A chain of stores on one service: each key sees and changes only its own store (issue #8)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fitting_room.errors import DataContractError
from fitting_room.rooms import load_store_rooms
from tests.conftest import Artifacts

ITEMS = ["sku-0042", "sku-0015"]
BERLIN = {"kiosk": "berlin-kiosk-000001", "staff": "berlin-staff-000001", "admin": "berlin-admin-000001"}
MUNICH = {"kiosk": "munich-kiosk-000001", "staff": "munich-staff-000001"}
BERLIN_ROOMS = [{"room_id": "room_1", "max_items": 6}, {"room_id": "room_2", "max_items": 6}]
MUNICH_ROOMS = [{"room_id": "room_1", "max_items": 8}, {"room_id": "m_2", "max_items": 12, "accessible": True}]


def write_chain(folder: Path) -> tuple[Path, Path]:
    """Keys for two stores, Berlin's rooms inline and Munich's in a file of its own."""
    keys = {key: {"role": role, "store": "berlin-01"} for role, key in BERLIN.items()}
    keys |= {key: {"role": role, "store": "munich-02"} for role, key in MUNICH.items()}
    keys_file = folder / "keys.json"
    keys_file.write_text(json.dumps(keys))
    (folder / "munich_rooms.json").write_text(json.dumps(MUNICH_ROOMS))
    rooms_file = folder / "rooms.json"
    rooms_file.write_text(json.dumps({"berlin-01": BERLIN_ROOMS, "munich-02": "munich_rooms.json"}))
    return keys_file, rooms_file


@pytest.fixture
def chain(artifacts: Artifacts, tmp_path: Path, any_database: str) -> Iterator[TestClient]:
    from api import create_app
    from fitting_room.settings import Settings

    keys_file, rooms_file = write_chain(tmp_path)
    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=artifacts.model_dir,
        database=any_database,
        api_keys_file=keys_file,
        rooms_file=rooms_file,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def call(client: TestClient, key: str, method: str, path: str, body: Any = None) -> Any:
    return client.request(method, path, json=body, headers={"X-API-Key": key})


def test_each_store_has_its_own_rooms_and_line(chain: TestClient):
    berlin = [call(chain, BERLIN["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS}).json() for _ in range(3)]
    assert [b["status"] for b in berlin] == ["assigned", "assigned", "waitlisted"]
    assert berlin[2]["position"] == 1

    munich_status = call(chain, MUNICH["kiosk"], "GET", "/rooms/status").json()
    assert [r["room_id"] for r in munich_status["rooms"]] == ["m_2", "room_1"]
    assert all(r["session_id"] is None for r in munich_status["rooms"])
    assert munich_status["waitlist"] == []
    # Munich's room_1 is free although Berlin's room_1 is taken: same id, different store.
    first = call(chain, MUNICH["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS}).json()
    assert first["status"] == "assigned" and first["room_id"] == "room_1"


def test_another_stores_ids_are_not_found_and_change_nothing(chain: TestClient):
    waiting = [call(chain, BERLIN["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS}).json() for _ in range(3)][-1]
    before = call(chain, BERLIN["kiosk"], "GET", "/rooms/status").json()
    assert [w["session_id"] for w in before["waitlist"]] == [waiting["session_id"]]

    assert call(chain, MUNICH["kiosk"], "GET", f"/sessions/{waiting['session_id']}").status_code == 404
    assert call(chain, MUNICH["kiosk"], "POST", f"/sessions/{waiting['session_id']}/cancel").status_code == 404
    after = call(chain, BERLIN["kiosk"], "GET", "/rooms/status").json()
    assert [(w["session_id"], w["position"]) for w in after["waitlist"]] == [(waiting["session_id"], 1)]
    assert [r["session_id"] for r in after["rooms"]] == [r["session_id"] for r in before["rooms"]]


def test_alerts_belong_to_the_store_that_raised_them(chain: TestClient):
    seated = call(chain, BERLIN["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS}).json()
    exit_report = {"session_id": seated["session_id"], "room_id": seated["room_id"], "exit_scans": []}
    result = call(chain, BERLIN["staff"], "POST", "/detect_anomaly", {**exit_report, "actual_duration": 12}).json()
    alert_id = result["alert_id"]
    assert alert_id is not None

    assert call(chain, MUNICH["staff"], "GET", "/alerts").json()["alerts"] == []
    refused = call(chain, MUNICH["staff"], "POST", f"/alerts/{alert_id}/resolve", {"outcome": "theft"})
    assert refused.status_code == 404
    berlin_alerts = call(chain, BERLIN["staff"], "GET", "/alerts").json()["alerts"]
    assert [(a["alert_id"], a["status"]) for a in berlin_alerts] == [(alert_id, "open")]
    resolved = call(chain, BERLIN["staff"], "POST", f"/alerts/{alert_id}/resolve", {"outcome": "theft"})
    assert resolved.status_code == 200


def test_an_exit_report_in_the_wrong_store_never_frees_a_room(chain: TestClient):
    seated = call(chain, BERLIN["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS}).json()
    report = {
        "session_id": seated["session_id"],
        "room_id": "room_1",
        "exit_scans": ITEMS,
        "entry_scans": ITEMS,
        "actual_duration": 10,
    }
    analysed = call(chain, MUNICH["staff"], "POST", "/detect_anomaly", report).json()
    assert analysed["room_released"] is False
    rooms = call(chain, BERLIN["kiosk"], "GET", "/rooms/status").json()["rooms"]
    assert seated["session_id"] in [r["session_id"] for r in rooms]


def test_admin_reconfigures_only_its_own_store(chain: TestClient):
    new_rooms = {"rooms": [{"room_id": "b_9", "max_items": 20}]}
    assert call(chain, BERLIN["admin"], "PUT", "/rooms", new_rooms).status_code == 200
    assert [r["room_id"] for r in call(chain, BERLIN["kiosk"], "GET", "/rooms/status").json()["rooms"]] == ["b_9"]
    munich_rooms = call(chain, MUNICH["kiosk"], "GET", "/rooms/status").json()["rooms"]
    assert [r["room_id"] for r in munich_rooms] == ["m_2", "room_1"]


def test_dashboard_numbers_and_events_are_per_store(chain: TestClient):
    for _ in range(2):
        call(chain, BERLIN["kiosk"], "POST", "/assign_room", {"item_ids": ITEMS})
    assert call(chain, BERLIN["staff"], "GET", "/dashboard/summary").json()["arrivals"] == 2
    assert call(chain, MUNICH["staff"], "GET", "/dashboard/summary").json()["arrivals"] == 0


def test_a_key_for_a_store_without_rooms_stops_startup(artifacts: Artifacts, tmp_path: Path):
    from api import create_app
    from fitting_room.settings import Settings

    keys_file, _ = write_chain(tmp_path)
    rooms_file = tmp_path / "only_berlin.json"
    rooms_file.write_text(json.dumps({"berlin-01": BERLIN_ROOMS}))
    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=artifacts.model_dir,
        database=str(tmp_path / "state.db"),
        api_keys_file=keys_file,
        rooms_file=rooms_file,
    )
    with pytest.raises(DataContractError, match="munich-02"), TestClient(create_app(settings)):
        pass


def test_models_per_store_come_from_each_stores_folder(artifacts: Artifacts, tmp_path: Path):
    from api import create_app
    from fitting_room.settings import Settings

    keys_file, rooms_file = write_chain(tmp_path)
    model_dir = tmp_path / "models"
    shutil.copytree(artifacts.model_dir, model_dir / "berlin-01")  # Munich has not been trained yet
    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=model_dir,
        database=str(tmp_path / "state.db"),
        api_keys_file=keys_file,
        rooms_file=rooms_file,
        models_per_store=True,
    )
    with TestClient(create_app(settings)) as client:
        assert call(client, BERLIN["kiosk"], "POST", "/predict_duration", {"item_ids": ITEMS}).status_code == 200
        refused = call(client, MUNICH["kiosk"], "POST", "/predict_duration", {"item_ids": ITEMS})
        assert refused.status_code == 503
        assert call(client, MUNICH["staff"], "GET", "/models").json()["error"]
        assert call(client, BERLIN["staff"], "GET", "/models").json()["error"] is None
        assert client.get("/readyz").status_code == 503


def test_rooms_file_forms(tmp_path: Path):
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(BERLIN_ROOMS))
    assert list(load_store_rooms(plain)) == ["default"]
    _, chain_file = write_chain(tmp_path)
    stores = load_store_rooms(chain_file)
    assert {s: [r.room_id for r in rooms] for s, rooms in stores.items()} == {
        "berlin-01": ["room_1", "room_2"],
        "munich-02": ["room_1", "m_2"],
    }
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"berlin-01": "missing.json"}))
    with pytest.raises(DataContractError, match=r"missing\.json"):
        load_store_rooms(broken)
