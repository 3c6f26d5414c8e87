"""The store on both back ends: per-store scoping, database constraints, transient-conflict retries."""

from __future__ import annotations

import psycopg.errors
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from fitting_room.engine import RoomSpec
from fitting_room.store import Database, Store
from tests.engine_factories import at
from tests.fakes import make_service

ROOMS = [RoomSpec("room_1", 6)]
ITEMS = ["sku-0001", "sku-0002"]


@pytest.fixture
def database(any_database: str) -> str:
    return any_database


def test_stores_on_one_database_keep_apart(database: str):
    berlin = make_service(database, ROOMS, store_id="berlin-01")
    munich = make_service(database, ROOMS, store_id="munich-02")
    b = [berlin.assign(ITEMS, False, at(0)).session for _ in range(3)]
    m = munich.assign(ITEMS, False, at(0)).session
    assert [s.status.value for s in b] == ["assigned", "waitlisted", "waitlisted"]
    assert m.status.value == "assigned" and m.room_id == "room_1"  # Berlin's line does not reach Munich
    assert [v.position for v in munich.floor_status(at(1)).waitlist] == []
    assert [v.position for v in berlin.floor_status(at(1)).waitlist] == [1, 2]
    with munich.store.read() as tx:
        assert not tx.session_exists(b[0].session_id)
        assert tx.last_event_id() > 0
        assert {e.payload["session_id"] for e in tx.events_after(0)} == {m.session_id}


def test_database_refuses_a_second_holder_of_a_waitlist_number(database: str):
    service = make_service(database, ROOMS)
    for _ in range(3):
        service.assign(ITEMS, False, at(0))
    with service.store.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("UPDATE sessions SET queue_seq = 1 WHERE status = 'waitlisted'"))


@pytest.mark.parametrize("error", [psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected])
def test_serialization_failures_and_deadlocks_are_run_again(database: str, error: type[Exception]):
    store = Store(database)
    store.create_schema()
    attempts: list[int] = []

    def action() -> str:
        with store.write():
            attempts.append(1)
            if len(attempts) < 3:
                raise OperationalError("UPDATE store_state ...", {}, error("conflict"))
        return "done"

    assert store.retrying(action) == "done"
    assert len(attempts) == 3


def test_other_database_errors_are_not_retried(database: str):
    store = Database(database).store()
    store.create_schema()
    attempts: list[int] = []

    def action() -> None:
        attempts.append(1)
        raise IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate"))

    with pytest.raises(IntegrityError):
        store.retrying(action)
    assert attempts == [1]


def test_a_retry_inside_an_outer_transaction_is_left_to_the_outer_caller(database: str):
    store = Store(database)
    store.create_schema()
    attempts: list[int] = []

    def inner() -> None:
        attempts.append(1)
        raise OperationalError("UPDATE ...", {}, psycopg.errors.SerializationFailure("conflict"))

    with pytest.raises(OperationalError), store.write():
        store.retrying(inner)
    assert attempts == [1]
