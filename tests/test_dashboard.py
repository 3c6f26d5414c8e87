"""The dashboard's HTTP side through TestClient: page and assets, /dashboard/summary and the /events stream."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from fitting_room.dashboard import STATIC_DIR, dashboard_router, day_bounds, quantile, sse_message
from tests.conftest import Artifacts

ITEMS = ["sku-0042", "sku-0015"]
BERLIN = "Europe/Berlin"


@pytest.fixture
def berlin_client(artifacts: Artifacts, tmp_path: Path) -> Iterator[TestClient]:
    """The real app for a store in Berlin, with a second copy of the dashboard routes that time out fast."""
    from api import create_app, store_access
    from fitting_room.auth import Role
    from fitting_room.settings import Settings

    settings = Settings(
        data_dir=artifacts.data_dir,
        model_dir=artifacts.model_dir,
        database=str(tmp_path / "state.db"),
        timezone=BERLIN,
    )
    app = create_app(settings)
    fast = dashboard_router(
        poll_seconds=0.05, heartbeat_seconds=0.2, stream_seconds=0.6, context=store_access(Role.STAFF, "watch")
    )
    app.include_router(fast, prefix="/fast")
    with TestClient(app) as test_client:
        yield test_client


def assign(client: TestClient, timestamp: str, items: list[str] = ITEMS) -> dict[str, Any]:
    response = client.post("/assign_room", json={"item_ids": items, "timestamp": timestamp})
    assert response.status_code == 200, response.text
    return dict(response.json())


def summary(client: TestClient, at: str | None = None) -> dict[str, Any]:
    response = client.get("/dashboard/summary", params={"at": at} if at else None)
    assert response.status_code == 200, response.text
    return dict(response.json())


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {"id", "event", "data", "retry"} dicts; comments become {"comment"}."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = json.loads(value) if name == "data" else value


# --- the page ------------------------------------------------------------------------------------------


def test_page_and_assets_are_served_without_external_resources(client: TestClient):
    page = client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="dashboard/static/dashboard.js"' in page.text
    assert 'href="dashboard/static/dashboard.css"' in page.text
    css = client.get("/dashboard/static/dashboard.css")
    js = client.get("/dashboard/static/dashboard.js")
    assert css.headers["content-type"].startswith("text/css")
    assert js.headers["content-type"].startswith("text/javascript")
    for body in (page.text, css.text, js.text):
        # Store networks are often offline: no CDN, no web fonts, nothing fetched from elsewhere.
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body, re.IGNORECASE)
        assert "@import" not in body
        assert "@font-face" not in body
    assert client.get("/dashboard/static/../../api.py").status_code == 404
    assert client.get("/dashboard/static/secrets.json").status_code == 404


def test_static_folder_holds_exactly_the_served_files():
    assert sorted(p.name for p in STATIC_DIR.iterdir()) == ["dashboard.css", "dashboard.html", "dashboard.js"]


def test_openapi_documents_summary_and_the_event_stream_key(client: TestClient):
    spec = client.get("/openapi.json").json()
    assert "/dashboard/summary" in spec["paths"]
    events = spec["paths"]["/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
    names = {p["name"] for p in events["parameters"]}
    assert {"api_key", "Last-Event-ID"} <= names
    fields = spec["components"]["schemas"]["DashboardSummary"]["properties"]
    assert all(prop.get("description") and "examples" in prop for prop in fields.values())
    assert "/dashboard" not in spec["paths"]


# --- today's numbers -----------------------------------------------------------------------------------


def test_quantile_interpolates_between_order_statistics():
    assert quantile([0, 0, 0, 0, 0, 0, 12], 0.9) == pytest.approx(4.8)
    assert quantile([3.0], 0.9) == 3.0
    assert quantile([10, 0], 0.5) == 5.0
    assert quantile([1, 2, 3], 1.0) == 3.0


def test_day_bounds_follow_the_store_zone_across_daylight_saving():
    zone = ZoneInfo(BERLIN)
    start, end = day_bounds(date(2026, 3, 29), zone)
    assert start == datetime.fromisoformat("2026-03-28T23:00:00+00:00")
    assert (end - start).total_seconds() == 23 * 3600
    start, end = day_bounds(date(2026, 12, 4), zone)
    assert start == datetime.fromisoformat("2026-12-03T23:00:00+00:00")
    assert end == datetime.fromisoformat("2026-12-04T23:00:00+00:00")


def test_summary_counts_the_store_local_day(berlin_client: TestClient):
    client = berlin_client
    seated = [assign(client, "2026-12-04T10:00:00+01:00") for _ in range(6)]
    assert all(b["status"] == "assigned" for b in seated)
    waiting = assign(client, "2026-12-04T10:00:00+01:00")
    assert waiting["status"] == "waitlisted"
    first = seated[0]
    released = client.post(
        "/detect_anomaly",
        json={
            "session_id": first["session_id"],
            "room_id": first["room_id"],
            "exit_scans": [],
            "exit_time": "2026-12-04T10:12:00+01:00",
        },
    ).json()
    assert released["next_assignment"]["session_id"] == waiting["session_id"]
    assert released["alert_id"] is not None
    # 23:30 UTC is already the next day in Berlin.
    late = assign(client, "2026-12-04T23:30:00+00:00")
    assert late["status"] == "waitlisted"

    day = summary(client, "2026-12-04T12:00:00")  # no offset: store-local
    assert day == {
        "date": "2026-12-04",
        "timezone": BERLIN,
        "arrivals": 7,
        "sessions_started": 7,
        "sessions_completed": 1,
        "mean_wait": pytest.approx(12 / 7, abs=0.01),
        "p90_wait": pytest.approx(4.8),
        "alerts_raised": 1,
        "alerts_resolved": 0,
    }
    assert summary(client, "2026-12-03T23:30:00+00:00")["date"] == "2026-12-04"
    next_day = summary(client, "2026-12-05T08:00:00+01:00")
    assert next_day["arrivals"] == 1
    assert next_day["sessions_started"] == 0
    assert next_day["mean_wait"] is None
    assert next_day["p90_wait"] is None

    resolved = client.post(f"/alerts/{released['alert_id']}/resolve", json={"outcome": "item_found"}).json()
    on_resolution_day = summary(client, resolved["resolved_at"])
    assert on_resolution_day["alerts_resolved"] == 1
    assert summary(client)["date"] in {
        on_resolution_day["date"],
        datetime.now(ZoneInfo(BERLIN)).date().isoformat(),
    }


def test_summary_rejects_a_bad_time(client: TestClient):
    response = client.get("/dashboard/summary", params={"at": "yesterday"})
    assert response.status_code == 422


# --- the event stream ----------------------------------------------------------------------------------


def test_sse_message_wire_format():
    assert sse_message({"b": 1, "a": "x"}, event_id=7, event="ready", retry=500) == (
        'retry: 500\nid: 7\nevent: ready\ndata: {"a":"x","b":1}\n\n'
    )


def test_events_announce_ready_then_each_committed_change(client: TestClient):
    with client.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        events = sse_events(response.iter_lines())
        ready = next(events)
        assert ready["event"] == "ready"
        assert ready["retry"] == "500"
        assert ready["data"] == {"last_event_id": 0}
        assert ready["id"] == "0"

        seated = client.post("/assign_room", json={"item_ids": ITEMS}).json()
        assigned = next(events)
        assert "event" not in assigned
        assert assigned["data"]["kind"] == "session_assigned"
        assert assigned["data"]["payload"] == {"session_id": seated["session_id"], "room_id": seated["room_id"]}
        assert assigned["id"] == str(assigned["data"]["event_id"])

        client.post(
            "/detect_anomaly",
            json={"session_id": seated["session_id"], "room_id": seated["room_id"], "exit_scans": []},
        )
        kinds = [next(events)["data"]["kind"] for _ in range(2)]
        assert kinds == ["session_completed", "alert_raised"]


def test_events_resume_after_last_event_id(client: TestClient):
    for _ in range(3):
        client.post("/assign_room", json={"item_ids": ITEMS})
    with client.stream("GET", "/events", headers={"Last-Event-ID": "1"}) as response:
        events = sse_events(response.iter_lines())
        ready = next(events)
        assert ready["data"] == {"last_event_id": 3}
        # The ready event's id is the resume point, so a break during the replay loses nothing.
        assert ready["id"] == "1"
        replayed = [next(events) for _ in range(2)]
        assert [e["id"] for e in replayed] == ["2", "3"]


def test_events_after_a_replaced_database_start_from_its_end(client: TestClient):
    client.post("/assign_room", json={"item_ids": ITEMS})
    with client.stream("GET", "/events", headers={"Last-Event-ID": "9999"}) as response:
        ready = next(sse_events(response.iter_lines()))
        assert ready["id"] == "1"
        assert ready["data"] == {"last_event_id": 1}


def test_events_send_heartbeats_and_end_so_shutdown_never_waits_long(berlin_client: TestClient):
    response = berlin_client.get("/fast/events", params={"api_key": "accepted-but-not-checked-yet"})
    assert response.status_code == 200
    events = list(sse_events(iter(response.text.split("\n"))))
    assert events[0]["event"] == "ready"
    assert {"comment": "keep-alive"} in events
