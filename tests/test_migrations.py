"""Alembic migrations: they build exactly the schema the code declares, on both back ends, and only once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from fitting_room import migrations
from fitting_room.errors import DataContractError
from fitting_room.settings import Settings
from fitting_room.store import Database, make_engine
from fitting_room.tables import metadata
from tests.conftest import REPO


@pytest.fixture
def database(any_database: str) -> str:
    return any_database


def test_migrated_schema_is_the_declared_schema(database: str):
    engine = make_engine(database)
    assert migrations.current(engine) is None
    migrations.upgrade(engine)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    assert differences == []
    assert migrations.current(engine) == migrations.head()
    engine.dispose()


def test_upgrade_twice_changes_nothing_and_keeps_rows(database: str):
    db = Database(database)
    store = db.store("berlin-01")
    store.create_schema()
    store.create_schema()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT store_id FROM store_state")).scalars().all() == ["berlin-01"]
    db.close()


def test_constraints_include_one_waitlist_number_per_store(database: str):
    migrations.upgrade(engine := make_engine(database))
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("sessions")}
    assert indexes["one_waitlist_place_per_number"]["unique"]
    assert indexes["one_waitlist_place_per_number"]["column_names"] == ["store_id", "queue_seq"]
    assert indexes["one_active_session_per_room"]["unique"]
    engine.dispose()


def test_database_with_tables_but_no_history_is_refused(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE rooms (room_id TEXT PRIMARY KEY)"))
    with pytest.raises(DataContractError, match="no migration history"):
        migrations.upgrade(engine)
    assert migrations.current(engine) is None
    engine.dispose()


def test_make_migrate_entry_point_migrates_the_configured_database(tmp_path):
    path = tmp_path / "state.db"
    env = {**os.environ, "FITTING_ROOM_DATABASE": str(path)}
    command = [sys.executable, "-m", "fitting_room.migrations"]
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True)
    head = migrations.head()
    assert f"migrated from empty to revision {head}" in first.stdout
    assert f"already at revision {head}" in second.stdout
    assert migrations.current(make_engine(Settings(database=str(path)).database_url)) == head


def test_plain_postgresql_urls_are_served_by_psycopg_3():
    assert (
        Settings(database="postgresql://shop@db:5432/rooms").database_url == "postgresql+psycopg://shop@db:5432/rooms"
    )
    assert Settings(database="postgresql+psycopg://shop@db/rooms").database_url == "postgresql+psycopg://shop@db/rooms"


def test_upgrading_from_the_first_revision_keeps_every_store(database: str):
    engine = make_engine(database)
    migrations.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO store_state (store_id, next_queue_seq) VALUES ('berlin-01', 42)"))
    migrations.upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT store_id, next_queue_seq, floor_version FROM store_state")).all()
    assert [tuple(r) for r in rows] == [("berlin-01", 42, 0)]
    engine.dispose()
