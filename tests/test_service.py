"""The service over a real store, on SQLite and on PostgreSQL: durability, lifecycle, errors that change nothing,
concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from threading import Barrier, Event
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from fitting_room import service as service_module
from fitting_room.engine import Floor, RoomSpec, Rules, SessionStatus
from fitting_room.errors import ConflictError, InvalidRequestError, NotFoundError
from fitting_room.estimates import Projection, project
from fitting_room.service import QUICK_PROJECTION_SESSIONS, ExitReport, FittingRoomService
from fitting_room.settings import Policy
from fitting_room.store import StoreBusyError
from tests.engine_factories import at
from tests.fakes import make_service

ROOMS = [RoomSpec("room_1", 6), RoomSpec("room_2", 6), RoomSpec("room_3", 10, accessible=True)]
ITEMS = ["sku-0001", "sku-0002"]


@pytest.fixture
def db(any_database: str) -> str:
    return any_database


@pytest.fixture
def service(db: str) -> FittingRoomService:
    return make_service(db, ROOMS)


def snapshot(
    service: FittingRoomService,
) -> tuple[tuple[tuple[str, str | None], ...], tuple[tuple[str, int | None], ...]]:
    view = service.floor_status(at(0))
    rooms = tuple((r.room.room_id, r.session.session_id if r.session else None) for r in view.rooms)
    waiting = tuple((w.session.session_id, w.position) for w in view.waitlist)
    return rooms, waiting


def fill(service: FittingRoomService, n: int, minute: float = 0) -> list[str]:
    return [service.assign(ITEMS, False, at(minute)).session.session_id for _ in range(n)]


def test_state_survives_reopening_the_store(db: str, service: FittingRoomService):
    fill(service, 5)
    before = snapshot(service)
    service.store.close()
    reopened = make_service(db, ROOMS)
    assert snapshot(reopened) == before
    assert len(before[1]) == 2


def test_full_waitlist_lifecycle(service: FittingRoomService):
    first, _, _, w1, w2, w3 = fill(service, 6)
    assert [service.session(s, at(1)).position for s in (w1, w2, w3)] == [1, 2, 3]
    waits = [service.session(s, at(1)).estimated_wait or 0.0 for s in (w1, w2, w3)]
    assert all(w > 0 for w in waits)
    assert waits == sorted(waits), "the wait grows with position"

    service.cancel(w2, at(2))
    assert service.session(w3, at(2)).position == 2
    assert service.session(w2, at(2)).session.status is SessionStatus.CANCELLED

    room = service.session(first, at(3)).session.room_id or ""
    result = service.check_exit(ExitReport(first, room, exit_scans=ITEMS, exit_time=at(12)), at(30))
    assert result.room_released and not result.anomaly.is_anomaly
    assert result.next_assignment is not None and result.next_assignment.session_id == w1
    promoted = service.session(w1, at(13)).session
    assert promoted.status is SessionStatus.ASSIGNED and promoted.room_id == room
    assert promoted.assigned_at == at(12), "promotion happens at the exit's event time"
    assert service.session(w3, at(13)).position == 1

    done = service.session(first, at(13))
    assert done.session.status is SessionStatus.COMPLETED
    assert done.completion is not None and done.completion.actual_duration == pytest.approx(12)


def test_missing_item_opens_an_alert_that_staff_resolve(service: FittingRoomService):
    [s] = fill(service, 1)
    room = service.session(s, at(0)).session.room_id or ""
    result = service.check_exit(ExitReport(s, room, exit_scans=ITEMS[:1], actual_duration=9), at(10))
    assert result.anomaly.is_anomaly and result.alert_id is not None
    [alert] = service.list_alerts("open")
    assert alert.missing_items == ["sku-0002"] and alert.session_id == s
    resolved = service.resolve_alert(alert.alert_id, "item_found", "on the hook", at(20))
    assert resolved.status == "resolved" and resolved.outcome == "item_found"
    with pytest.raises(ConflictError):
        service.resolve_alert(alert.alert_id, "theft", None, at(21))
    with service.store.read() as tx:
        history = tx.finished_sessions()
    assert history[0]["outcome"] == "item_found"


@pytest.mark.parametrize(
    ("report", "error", "message"),
    [
        (ExitReport("nobody", "room_99", exit_scans=ITEMS, actual_duration=3), NotFoundError, "unknown room"),
        (ExitReport("nobody", "room_1", exit_scans=ITEMS), InvalidRequestError, "entry_scans"),
        (
            ExitReport("nobody", "room_1", exit_scans=ITEMS, entry_scans=ITEMS),
            InvalidRequestError,
            "actual_duration",
        ),
    ],
)
def test_exit_errors_change_nothing(service, report, error, message):
    fill(service, 4)
    before = snapshot(service)
    with pytest.raises(error, match=message):
        service.check_exit(report, at(5))
    assert snapshot(service) == before


def test_session_in_another_room_or_waiting_is_a_conflict(service: FittingRoomService):
    s1, s2, _, waiting = fill(service, 4)
    room2 = service.session(s2, at(0)).session.room_id or ""
    before = snapshot(service)
    with pytest.raises(ConflictError, match="not in"):
        service.check_exit(ExitReport(s1, room2, exit_scans=ITEMS, actual_duration=5), at(5))
    with pytest.raises(ConflictError, match="waiting"):
        service.check_exit(ExitReport(waiting, room2, exit_scans=ITEMS, actual_duration=5), at(5))
    assert snapshot(service) == before


def test_completed_session_cannot_be_released_twice(service: FittingRoomService):
    [s] = fill(service, 1)
    room = service.session(s, at(0)).session.room_id or ""
    service.check_exit(ExitReport(s, room, exit_scans=ITEMS, actual_duration=5), at(5))
    before = snapshot(service)
    with pytest.raises(ConflictError, match="completed"):
        service.check_exit(ExitReport(s, room, exit_scans=ITEMS, actual_duration=5), at(6))
    assert snapshot(service) == before


def test_exit_before_entry_is_refused(service: FittingRoomService):
    [s] = fill(service, 1, minute=10)
    room = service.session(s, at(10)).session.room_id or ""
    before = snapshot(service)
    with pytest.raises(InvalidRequestError, match="before"):
        service.check_exit(ExitReport(s, room, exit_scans=ITEMS, exit_time=at(5)), at(20))
    assert snapshot(service) == before


def test_unknown_session_is_analysed_without_state_change(service: FittingRoomService):
    fill(service, 2)
    before = snapshot(service)
    report = ExitReport("some-unique-session-id", "room_1", exit_scans=[], entry_scans=ITEMS, actual_duration=4)
    result = service.check_exit(report, at(5))
    assert result.anomaly.missing_items == ITEMS and not result.room_released
    assert snapshot(service) == before
    assert service.list_alerts() == []


def test_cancel_errors(service: FittingRoomService):
    [s] = fill(service, 1)
    with pytest.raises(NotFoundError):
        service.cancel("ghost", at(1))
    with pytest.raises(ConflictError, match="assigned"):
        service.cancel(s, at(1))


def test_database_refuses_two_sessions_in_one_room(service: FittingRoomService):
    fill(service, 2)
    with service.store.engine.connect() as conn, pytest.raises(IntegrityError):
        conn.execute(text("UPDATE sessions SET room_id = 'room_1' WHERE status = 'assigned'"))


def test_thirty_concurrent_assignments_share_no_room(db: str):
    rooms = [RoomSpec(f"room_{i}", 6) for i in range(10)]
    service = make_service(db, rooms)
    barrier = Barrier(30)

    def arrive(_: int) -> str:
        barrier.wait()
        return service.assign(ITEMS, False, at(0)).session.session_id

    with ThreadPoolExecutor(30) as pool:
        ids = list(pool.map(arrive, range(30)))
    view = service.floor_status(at(0))
    occupants = [r.session.session_id for r in view.rooms if r.session]
    assert len(occupants) == 10 == len(set(occupants))
    assert [w.position for w in view.waitlist] == list(range(1, 21))
    assert sorted(occupants + [w.session.session_id for w in view.waitlist]) == sorted(ids)


def test_every_committed_change_is_in_the_event_log(service: FittingRoomService):
    s1, _, _, waiting = fill(service, 4)
    room = service.session(s1, at(0)).session.room_id or ""
    with pytest.raises(ConflictError):
        service.cancel(s1, at(1))
    service.check_exit(ExitReport(s1, room, exit_scans=[], actual_duration=5), at(5))
    with service.store.read() as tx:
        events = tx.events_after(0)
        assert tx.last_event_id() == events[-1].event_id
    kinds = [e.kind for e in events]
    assert kinds[:4] == ["session_assigned"] * 3 + ["session_waitlisted"]
    assert kinds[4:] == ["session_completed", "session_assigned", "alert_raised"]
    assert events[5].payload == {"session_id": waiting, "room_id": room}


def test_server_clock_lag_behind_a_just_committed_event_is_not_an_error(service: FittingRoomService):
    s, _, _ = fill(service, 3)
    room = service.session(s, at(0)).session.room_id or ""
    service.check_exit(ExitReport(s, room, exit_scans=ITEMS, exit_time=at(10)), at(10))
    # Only the room freed at minute 10 is free: a request whose clock read lags that exit needs it.
    lagging = at(10) - timedelta(milliseconds=300)
    with pytest.raises(InvalidRequestError, match="earlier than the last event"):
        service.assign(ITEMS, False, lagging)
    with pytest.raises(InvalidRequestError, match="earlier than the last event"):
        service.assign(ITEMS, False, at(10) - timedelta(seconds=30), server_clock=True)
    view = service.assign(ITEMS, False, lagging, server_clock=True)
    assert view.session.arrived_at == at(10)
    assert view.session.room_id == room


def test_an_exit_reported_with_only_a_duration_happens_when_reported(service: FittingRoomService):
    # A gate that measured 10 minutes reports a session seated seconds ago: dating the exit entry + 10 min
    # would put room_1's last event in the future and refuse its next arrival.
    seated, _neighbour = (service.assign(ITEMS, False, at(0)).session for _ in range(2))
    result = service.check_exit(ExitReport(seated.session_id, "room_1", ITEMS, actual_duration=10.0), at(0.1))
    assert result.duration == 10.0 and result.room_released
    assert service.session(seated.session_id, at(1)).session.ended_at == at(0.1)
    assert service.assign(ITEMS, False, at(0.2)).session.room_id == "room_1"


@pytest.mark.parametrize(
    ("rules", "customers"),
    [(Rules(policy=Policy.EXPRESS), 5), (Rules(), QUICK_PROJECTION_SESSIONS + 2)],
    ids=["express", "fifo-large-floor"],
)
def test_a_reader_that_may_not_wait_never_projects_a_costly_line(db: str, rules: Rules, customers: int):
    service = make_service(db, ROOMS, rules)
    waiting = fill(service, customers)[len(ROOMS) :]
    # Nothing kept for this moment: projecting could take seconds, so the caller is told to ask from a thread.
    with pytest.raises(StoreBusyError):
        service.floor_status(at(1), wait=False)
    with pytest.raises(StoreBusyError):
        service.session(waiting[0], at(1), wait=False)
    view = service.floor_status(at(1))
    assert service.floor_status(at(1), wait=False) is view
    assert service.session(waiting[0], at(1), wait=False).estimated_wait == view.waitlist[0].estimated_wait
    # Sessions that need no projection are answered at once.
    seated = next(r.session.session_id for r in view.rooms if r.session is not None)
    assert service.session(seated, at(5), wait=False).session.room_id is not None
    service.cancel(waiting[1], at(2))  # a new floor version: nothing kept for it yet
    with pytest.raises(StoreBusyError):
        service.floor_status(at(1), wait=False)


def test_a_small_fifo_floor_is_projected_by_a_reader_that_may_not_wait(service: FittingRoomService):
    waiting = fill(service, 5)[len(ROOMS) :]
    view = service.floor_status(at(1), wait=False)
    assert [w.session.session_id for w in view.waitlist] == waiting
    assert service.floor_status(at(1)) is view


def test_one_projection_serves_every_poll_of_the_same_floor_and_moment(
    service: FittingRoomService, monkeypatch: pytest.MonkeyPatch
):
    waiting = fill(service, 5)[3:]
    calls: list[datetime] = []

    def counting_project(floor: Floor, at: datetime, rules: Rules, **kwargs: Any) -> Projection:
        calls.append(at)
        return project(floor, at, rules, **kwargs)

    monkeypatch.setattr(service_module, "project", counting_project)
    first = service.floor_status(at(1))
    assert service.floor_status(at(1)) is first  # an unchanged floor at the same moment: the same view
    assert service.session(waiting[0], at(1)).estimated_wait
    assert calls == [at(1)]
    later = service.floor_status(at(2)).waitlist[0].estimated_wait
    assert later is not None and first.waitlist[0].estimated_wait is not None
    assert later < first.waitlist[0].estimated_wait
    before_cancel = service.floor_status(at(2))
    service.cancel(waiting[1], at(2))  # a new floor version: the old projection and view no longer apply
    assert [v.position for v in service.floor_status(at(2)).waitlist] == [1]
    assert [v.position for v in before_cancel.waitlist] == [1, 2]
    assert calls == [at(1), at(2), at(2)]


def test_a_long_projection_does_not_hold_up_writers(db: str, monkeypatch: pytest.MonkeyPatch):
    service = make_service(db, ROOMS)
    waiting = fill(service, QUICK_PROJECTION_SESSIONS + 2)[len(ROOMS) :]
    started, release = Event(), Event()

    def slow_project(floor: Floor, at: datetime, rules: Rules, **kwargs: Any) -> Projection:
        started.set()
        assert release.wait(10), "the writer waited for the projection"
        return project(floor, at, rules, **kwargs)

    monkeypatch.setattr(service_module, "project", slow_project)
    with ThreadPoolExecutor(1) as pool:
        status = pool.submit(service.floor_status, at(1))
        assert started.wait(10)
        cancelled = service.cancel(waiting[-1], at(1))  # commits while the projection is running
        release.set()
        view = status.result()
    assert cancelled.session.status is SessionStatus.CANCELLED
    # The view is of the floor the projection started from; the next moment's shows the change.
    assert [w.session.session_id for w in view.waitlist] == waiting
    assert [w.session.session_id for w in service.floor_status(at(2)).waitlist] == waiting[:-1]


def test_a_large_fifo_floor_tells_one_customer_their_wait_without_projecting_the_floor(
    db: str, monkeypatch: pytest.MonkeyPatch
):
    # 40 rooms and 30 waiting: past the floors always simulated, every customer in one pool (see wait_pools.Pools).
    service = make_service(db, [RoomSpec(f"room_{i:02d}", 6) for i in range(40)])
    waiting = fill(service, 70)[40:]
    projected: list[datetime] = []
    copied: list[int] = []

    def counting_project(floor: Floor, at: datetime, rules: Rules, **kwargs: Any) -> Projection:
        projected.append(at)
        return project(floor, at, rules, **kwargs)

    copy = Floor.copy

    def counting_copy(floor: Floor) -> Floor:
        copied.append(1)
        return copy(floor)

    monkeypatch.setattr(service_module, "project", counting_project)
    monkeypatch.setattr(Floor, "copy", counting_copy)
    joined = service.assign(ITEMS, False, at(1))
    assert joined.position == 31 and joined.estimated_wait is not None
    read = service.session(waiting[0], at(1), wait=False)  # a pool model's answer is quick: no StoreBusyError
    assert read.position == 1 and read.estimated_wait is not None
    assert projected == [] and copied == [], "one customer's wait costs neither the floor's projection nor a copy"
    view = service.floor_status(at(1))
    assert projected == [at(1)]
    board = {w.session.session_id: w for w in view.waitlist}
    assert (board[waiting[0]].estimated_wait, board[waiting[0]].wait_interval) == (
        read.estimated_wait,
        read.wait_interval,
    )
    assert board[joined.session.session_id].estimated_wait == joined.estimated_wait
