"""The store on both back ends: per-store scoping, constraints, transient-conflict retries, the in-memory floor."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg.errors
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from fitting_room import engine
from fitting_room.engine import RoomSpec, Session
from fitting_room.service import ExitReport
from fitting_room.store import Database, Store, StoreBusyError
from tests.engine_factories import at, lognormal_prediction
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


def statements(store: Store, containing: str = "") -> list[str]:
    """Collects the statements (containing `containing`) the store's engine sends while it is attached."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if containing in statement:
            seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", record)
    return seen


def test_an_unchanged_floor_is_served_from_memory(database: str):
    service = make_service(database, ROOMS)
    service.assign(ITEMS, False, at(0))
    seen = statements(service.store, containing="FROM rooms")
    for _ in range(3):
        service.floor_status(at(1))
    service.assign(ITEMS, False, at(2))
    assert seen == []


def test_a_change_made_by_another_process_is_never_missed(database: str):
    here = make_service(database, ROOMS)
    there = make_service(database, ROOMS)  # its own engine and cache, like a second replica
    first = here.assign(ITEMS, False, at(0)).session
    assert [r.session.session_id for r in there.floor_status(at(1)).rooms if r.session] == [first.session_id]
    second = there.assign(ITEMS, False, at(2)).session
    waiting = [v.session.session_id for v in here.floor_status(at(3)).waitlist]
    assert waiting == [second.session_id]
    here.check_exit(ExitReport(first.session_id, "room_1", ITEMS, actual_duration=5.0), at(5))
    assert [r.session.session_id for r in there.floor_status(at(6)).rooms if r.session] == [second.session_id]


def test_a_rolled_back_change_leaves_no_trace_in_memory(database: str):
    service = make_service(database, ROOMS)
    service.floor_status(at(0))
    ghost = Session("ghost", tuple(ITEMS), False, at(1), lognormal_prediction(10.0))

    def admit_then_fail() -> None:
        with service.store.write() as tx:
            engine.admit(tx.load_floor(), ghost, at(1))
            raise RuntimeError("the request failed after changing the floor")

    with pytest.raises(RuntimeError):
        admit_then_fail()
    view = service.floor_status(at(2))
    assert [r.session for r in view.rooms] == [None]
    assert service.assign(ITEMS, False, at(3)).session.room_id == "room_1"


def test_a_reader_that_may_not_wait_is_told_the_floor_is_busy(database: str):
    service = make_service(database, ROOMS)
    with ThreadPoolExecutor(1) as pool:
        with service.store.write():  # another thread's read: the lock is re-entrant for the writer's own thread
            busy = pool.submit(lambda: service.floor_status(at(0), wait=False))
            busy.exception()
        with pytest.raises(StoreBusyError):
            busy.result()
    kept = service.floor_status(at(0))  # no writer now; the view of this moment is kept for readers that can't wait
    assert service.floor_status(at(0), wait=False) is kept
    assert kept.rooms[0].session is None


def test_a_change_writes_each_touched_row_once_and_looks_nothing_up(database: str):
    service = make_service(database, ROOMS)
    service.floor_status(at(0))
    sent = statements(service.store)
    seated = service.assign(ITEMS, False, at(1)).session
    waiting = service.assign(ITEMS, False, at(2)).session
    service.check_exit(ExitReport(seated.session_id, "room_1", ITEMS, actual_duration=5.0), at(5))
    # New sessions are inserted, known ones updated; the floor version and the line counter share one UPDATE.
    assert not [s for s in sent if s.startswith("SELECT sessions")]
    assert sum(s.startswith("UPDATE store_state") for s in sent) == 3
    assert sum(s.startswith("INSERT INTO sessions") for s in sent) == 2
    assert service.session(waiting.session_id, at(6)).session.room_id == "room_1"


def test_a_session_on_the_floor_without_its_row_fails_the_change_and_changes_nothing(database: str):
    service = make_service(database, ROOMS)
    seated = service.assign(ITEMS, False, at(0)).session
    with service.store.engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
        conn.execute(text("DELETE FROM sessions"))
    with pytest.raises(LookupError, match="has no row"):
        service.check_exit(ExitReport(seated.session_id, "room_1", ITEMS, actual_duration=5.0), at(5))
    assert service.floor_status(at(6)).rooms[0].room.session_id == seated.session_id  # the release rolled back


def test_sqlite_writes_of_a_store_reuse_one_connection_and_replace_it_when_broken(tmp_path):
    service = make_service(f"sqlite:///{tmp_path / 'state.db'}", ROOMS)
    service.assign(ITEMS, False, at(0))
    checkouts: list[object] = []
    event.listen(service.store.engine, "checkout", lambda *args: checkouts.append(args))
    for minute in range(1, 4):
        service.assign(ITEMS, False, at(minute))
    assert checkouts == []  # no trip through the pool per change
    held = service.store.database.held_connection(service.store.store_id)
    assert held is not None
    held.invalidate()
    assert service.assign(ITEMS, False, at(5)).session.queue_seq is not None
    assert len(checkouts) == 1
    replacement = service.store.database.held_connection(service.store.store_id)
    assert held.closed and replacement is not held
    service.store.database.close()
    assert replacement is not None and replacement.closed


def test_the_rows_hold_what_the_floor_holds_after_every_kind_of_change(database: str):
    service = make_service(database, [RoomSpec("room_1", 6), RoomSpec("room_2", 6)])
    sessions = [service.assign(ITEMS, False, at(minute)).session for minute in range(5)]  # 2 seated, 3 in line
    service.cancel(sessions[3].session_id, at(6))
    service.check_exit(ExitReport(sessions[0].session_id, "room_1", ITEMS[:1], actual_duration=5.0), at(7))
    with service.store.floor() as snapshot:
        memory = snapshot.floor.copy()
    fresh = Database(database).store(service.store.store_id)  # its own engine and no cache: reads the rows
    with fresh.read() as tx:
        rows = tx.load_floor()
        completed, completion = tx.get_session(sessions[0].session_id)
        cancelled, _ = tx.get_session(sessions[3].session_id)
    assert rows.active == memory.active and rows.rooms == memory.rooms
    assert rows.next_queue_seq == memory.next_queue_seq
    assert rows.active[sessions[2].session_id].room_id == "room_1"  # promoted into the freed room
    assert completed.status.value == "completed" and completed.prediction == sessions[0].prediction
    assert completion is not None and completion.exit_scans == ITEMS[:1] and completion.actual_duration == 5.0
    assert completion.anomaly["missing_items"] == ITEMS[1:]
    assert cancelled.status.value == "cancelled"
    fresh.database.close()


def test_a_chain_of_many_stores_on_one_sqlite_file_never_runs_out_of_connections(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'chain.db'}")
    database.migrate()
    stores = [database.store(f"store-{i:02d}") for i in range(24)]  # more than the pool's default 5 + 10
    for store in stores:
        store.ensure_store_row()
        with store.write() as tx:
            tx.sync_rooms(ROOMS)
    for store in stores:
        with store.read() as tx:  # readers still find a connection while every store holds its writer's
            assert [r.room_id for r in tx.load_floor().rooms.values()] == ["room_1"]
    database.close()


def test_a_failed_commit_leaves_the_store_writable_and_changes_nothing(database: str):
    service = make_service(database, ROOMS)

    def commit_fails(_conn: object) -> None:
        event.remove(service.store.engine, "commit", commit_fails)
        raise OSError("disk full at COMMIT")

    event.listen(service.store.engine, "commit", commit_fails)
    with pytest.raises(OSError, match="disk full"):
        service.assign(ITEMS, False, at(0))
    # The held SQLite connection had its transaction left open by the failed commit; it is rolled back.
    seated = service.assign(ITEMS, False, at(1)).session
    assert [r.session.session_id for r in service.floor_status(at(2)).rooms if r.session] == [seated.session_id]
