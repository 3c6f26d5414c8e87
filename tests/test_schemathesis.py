"""Schemathesis against a live uvicorn's own OpenAPI document, with an admin key: no 5xx, responses as declared.

Every operation gets positive and negative cases (deterministic, bounded). The checks are schemathesis'
`not_a_server_error` and `response_schema_conformance`, plus ours: every 4xx carries a JSON `{"detail": ...}`.
The server's state grows as cases run (rooms fill, the waitlist lengthens), so later cases meet a busy floor.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Artifacts, LiveServer, settings_env
from tests.test_live_hardening import WatchedServer

pytestmark = pytest.mark.e2e

ADMIN_KEY = "admin-key-schemathesis-0123456789"
MAX_EXAMPLES = 50
CASES: Counter[str] = Counter()

# Timestamps anywhere in datetime's range with any offset, and often at its very edges (years 1 and 9999) or
# at the edges of the accepted years (2000, 2100), with offsets of ±23:59 or none: where offset conversion and
# duration arithmetic overflow. Uniform dates alone almost never land there within a few dozen cases.
OFFSETS = st.none() | st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
EXTREME_OFFSETS = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=23, minutes=59)), timezone(-timedelta(hours=23, minutes=59))]
)


def moments(*choices: datetime) -> st.SearchStrategy[str]:
    """ISO 8601 strings of these wall-clock times with an extreme offset or none."""
    return st.builds(
        lambda moment, zone: moment.replace(tzinfo=zone).isoformat(), st.sampled_from(choices), EXTREME_OFFSETS
    )


DATE_TIMES = st.one_of(
    moments(datetime.min, datetime.max),
    moments(datetime(2000, 1, 1), datetime(2100, 12, 31, 23, 59, 59)),
    st.datetimes(timezones=OFFSETS).map(datetime.isoformat),
)
schemathesis.openapi.format("date-time", DATE_TIMES)


@schemathesis.check
def errors_say_what_is_wrong(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx answer is a JSON object with a `detail`, as the README promises."""
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            body = response.content
        assert isinstance(body, dict) and "detail" in body, f"{response.status_code} without detail: {body!r}"
    return None


CHECKS = [not_a_server_error, response_schema_conformance, errors_say_what_is_wrong]


@pytest.fixture(scope="module")
def secured_server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live uvicorn that requires API keys, with an admin key for the tests."""
    root: Path = tmp_path_factory.mktemp("schemathesis")
    keys_file = root / "keys.json"
    keys_file.write_text(json.dumps({ADMIN_KEY: "admin"}))
    env = settings_env(artifacts, root / "state.db") | {"FITTING_ROOM_API_KEYS_FILE": str(keys_file)}
    server = WatchedServer(env).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive HTTP session for every case."""
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module", autouse=True)
def report_cases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many cases ran per operation once the module is done (past output capturing)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not CASES:
        return
    lines = [f"  {label}: {n}" for label, n in sorted(CASES.items())]
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"\nschemathesis: {sum(CASES.values())} cases\n" + "\n".join(lines))


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, built without starting it (collection needs it before any server runs)."""
    from api import create_app

    return create_app().openapi()


# Loaded eagerly: schemathesis' fixture-based lazy loading does not work with pytest 9. The live server must
# publish this very document (checked below), so fuzzing it is fuzzing the live app's OpenAPI.
# /events is a server-sent-event stream that stays open for 20 s by design: nothing to fuzz there.
DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT).exclude(path="/events")
# Sent with every case and never mutated: negative cases fuzz the inputs, not the key (test_hardening covers auth).
schema.config.update(headers={"X-API-Key": ADMIN_KEY})


def test_live_server_publishes_the_fuzzed_document(secured_server: LiveServer) -> None:
    published = requests.get(f"{secured_server.base_url}/openapi.json", timeout=30).json()
    assert published == DOCUMENT


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/rooms/status?at=9999-12-31T23:59:59%2B00:00", None),
        ("POST", "/predict_duration", {"item_ids": ["sku-0042"], "entry_time": "0001-01-01T00:00:00+23:59"}),
        ("POST", "/assign_room", {"item_ids": ["sku-0042"], "timestamp": "9999-12-31T23:59:59"}),
        (
            "POST",
            "/detect_anomaly",
            {
                "session_id": "x",
                "room_id": "room_1",
                "exit_scans": [],
                "entry_scans": ["sku-0042"],
                "actual_duration": 1440,
                "entry_time": "9999-12-31T23:59:59+00:00",
            },
        ),
    ],
)
def test_timestamps_outside_2000_to_2100_are_refused_not_crashed(
    secured_server: LiveServer, http: requests.Session, method: str, path: str, body: Any
) -> None:
    # Each of these answered 500 (OverflowError in offset or duration arithmetic) before the bound.
    headers = {"X-API-Key": ADMIN_KEY}
    seated = http.post(f"{secured_server.base_url}/assign_room", json={"item_ids": ["sku-0042"]}, headers=headers)
    assert seated.status_code == 200, seated.text
    response = http.request(method, secured_server.base_url + path, json=body, headers=headers, timeout=30)
    assert response.status_code == 422, response.text
    assert "years 2000-2100" in response.text


SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def call_and_validate(case: Case, server: LiveServer, http: requests.Session) -> None:
    """Send one case to the live server and run the checks on the answer."""
    CASES[case.operation.label] += 1
    case.call_and_validate(base_url=server.base_url, session=http, checks=CHECKS, timeout=30)


@schema.parametrize()
@SETTINGS
def test_api_conforms_to_its_openapi(case: Case, secured_server: LiveServer, http: requests.Session) -> None:
    call_and_validate(case, secured_server, http)
