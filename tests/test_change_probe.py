"""The SQLite change probe: reads of an unchanged floor need no transaction, and no commit goes unseen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event

from fitting_room.change_probe import ChangeProbe
from fitting_room.engine import RoomSpec
from fitting_room.service import ExitReport
from fitting_room.tables import SESSION_EXISTS
from tests.engine_factories import at
from tests.fakes import make_service

ROOMS = [RoomSpec("room_1", 6)]
ITEMS = ["sku-0001", "sku-0002"]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def statements(engine: object) -> list[str]:
    """Every SQL statement the engine sends from now on."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _k, statement, *_a: seen.append(statement))
    return seen


def test_an_unchanged_floor_is_read_without_a_statement(url: str):
    service = make_service(url, ROOMS)
    service.assign(ITEMS, False, at(0))
    service.floor_status(at(1))  # the first read after a commit asks the database once
    seen = statements(service.store.engine)
    for second in range(2, 6):
        service.floor_status(at(second))
    assert seen == []


def test_a_commit_on_another_connection_is_seen_by_the_next_read(url: str):
    here = make_service(url, ROOMS)
    there = make_service(url, ROOMS)  # its own engine, probe and cache: another process
    assert here.floor_status(at(0)).rooms[0].session is None
    first = there.assign(ITEMS, False, at(1)).session
    occupant = here.floor_status(at(2)).rooms[0].session
    assert occupant is not None and occupant.session_id == first.session_id
    there.check_exit(ExitReport(first.session_id, "room_1", ITEMS, actual_duration=5.0), at(3))
    assert here.floor_status(at(4)).rooms[0].session is None


def test_data_version_moves_only_when_another_connection_commits(tmp_path: Path):
    path = tmp_path / "probe.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    probe = ChangeProbe(create_engine(f"sqlite:///{path}"))
    before = probe.data_version()
    assert probe.data_version() == before
    writer.execute("INSERT INTO t VALUES (1)")
    after = probe.data_version()
    assert after != before
    writer.execute("BEGIN")
    writer.execute("INSERT INTO t VALUES (2)")
    writer.execute("ROLLBACK")
    assert probe.data_version() == after
    probe.close()


def test_lookups_through_the_probe_see_the_latest_commit(url: str):
    service = make_service(url, ROOMS)
    probe = service.store.database.probe
    assert probe is not None
    params = {"store_id": service.store.store_id, "session_id": "c1"}
    assert probe.first(SESSION_EXISTS, params) is None
    session = service.assign(ITEMS, False, at(0)).session
    assert probe.first(SESSION_EXISTS, {**params, "session_id": session.session_id}) == (session.session_id,)
    assert service.store.session_exists(session.session_id)
    assert not service.store.session_exists("nobody")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@localhost/db"])
def test_only_sqlite_files_have_a_probe(url: str):
    engine = create_engine(url)
    assert not ChangeProbe.supports(engine)
    with pytest.raises(ValueError, match="SQLite file"):
        ChangeProbe(engine)


def test_the_known_version_holds_only_until_the_next_commit(url: str):
    here = make_service(url, ROOMS)
    there = make_service(url, ROOMS)
    assert here.store.known_version() is None  # nothing verified yet
    here.floor_status(at(0))
    version = here.store.known_version()
    assert version is not None
    there.assign(ITEMS, False, at(1))  # another process commits
    assert here.store.known_version() is None
    assert here.floor_status(at(2)).rooms[0].session is not None
    assert here.store.known_version() == version + 1
