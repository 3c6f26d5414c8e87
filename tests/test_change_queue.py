"""fitting_room/change_queue.py: a store's changes in arrival order on one thread, queued ones committed together."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event

from fitting_room.change_queue import ChangeQueue
from fitting_room.engine import RoomSpec, SessionStatus
from fitting_room.errors import NotFoundError
from fitting_room.service import FittingRoomService, SessionView
from tests.engine_factories import at
from tests.fakes import make_service

ITEMS = ["sku-0001", "sku-0002"]


@pytest.fixture
def service(any_database: str) -> FittingRoomService:
    return make_service(any_database, [RoomSpec("room_1", 6), RoomSpec("room_2", 6)])


async def hold(queue: ChangeQueue) -> tuple[asyncio.Task[None], threading.Event]:
    """Put a change on the store's thread that holds it until the returned event is set; back once it holds it."""
    started, release = threading.Event(), threading.Event()

    def held() -> None:
        started.set()
        release.wait()

    first = asyncio.create_task(queue.run(held))
    await asyncio.get_running_loop().run_in_executor(None, started.wait)
    return first, release


def behind_a_held_change(
    queue: ChangeQueue, queued: Sequence[Callable[[], Coroutine[Any, Any, Any]]]
) -> Coroutine[Any, Any, list[Any]]:
    """Run a first change that holds the store's thread until every one of `queued` is in line, then let go.

    Returns the outcomes of the queued ones (exceptions as values), in order.
    """

    async def scenario() -> list[Any]:
        first, release = await hold(queue)
        waiting = [asyncio.create_task(make()) for make in queued]
        await asyncio.sleep(0)  # one turn of the loop: every task has put its change in line
        release.set()
        await first
        return list(await asyncio.gather(*waiting, return_exceptions=True))

    return scenario()


def test_changes_queued_behind_one_commit_together_each_with_its_own_floor_version(service: FittingRoomService):
    queue = ChangeQueue(service.store)
    with service.store.floor() as snapshot:
        before = snapshot.version
    commits: list[object] = []
    event.listen(service.store.engine, "commit", commits.append)
    arrivals = [partial(queue.run, service.assign, ITEMS, False, at(minute)) for minute in range(5)]
    views: list[SessionView] = asyncio.run(behind_a_held_change(queue, arrivals))
    queue.shutdown()
    assert len(commits) == 1  # the five arrivals: one transaction (the held change wrote nothing)
    assert [v.session.status for v in views] == [SessionStatus.ASSIGNED] * 2 + [SessionStatus.WAITLISTED] * 3
    assert [v.position for v in views[2:]] == [1, 2, 3]
    assert views[2].estimated_wait is not None and views[4].estimated_wait is not None
    assert views[2].estimated_wait <= views[4].estimated_wait
    with service.store.floor() as snapshot:
        assert snapshot.version == before + 5  # one version per change: their kept projections never mix
    fresh = make_service(service.store.database.url, [RoomSpec("room_1", 6), RoomSpec("room_2", 6)])
    assert [v.session.session_id for v in fresh.floor_status(at(6)).waitlist] == [
        v.session.session_id for v in views[2:]
    ]


def test_a_failing_change_in_a_group_fails_alone_and_the_others_commit(service: FittingRoomService):
    queue = ChangeQueue(service.store)
    changes = [
        lambda: queue.run(service.assign, ITEMS, False, at(0)),
        lambda: queue.run(service.cancel, "nobody", at(1)),
        lambda: queue.run(service.assign, ITEMS, False, at(2)),
    ]
    first, failed, third = asyncio.run(behind_a_held_change(queue, changes))
    queue.shutdown()
    assert isinstance(failed, NotFoundError)
    assert {first.session.room_id, third.session.room_id} == {"room_1", "room_2"}
    rooms = {r.room.spec.room_id: r.session for r in service.floor_status(at(3)).rooms}
    assert {s.session_id for s in rooms.values() if s} == {first.session.session_id, third.session.session_id}


def test_queued_changes_finish_before_the_queue_stops_and_a_gone_caller_leaves_its_change_standing(
    service: FittingRoomService,
):
    queue = ChangeQueue(service.store)

    async def scenario() -> None:
        first, release = await hold(queue)
        abandoned = asyncio.create_task(queue.run(service.assign, ITEMS, False, at(0)))
        kept = asyncio.create_task(queue.run(service.assign, ITEMS, False, at(1)))
        await asyncio.sleep(0)
        abandoned.cancel()  # the kiosk hung up; its arrival is in line already
        release.set()
        await first
        await kept
        # The queue stops only after what it accepted; the loop stays free to take the outcomes meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, queue.shutdown)

    asyncio.run(scenario())
    seated = [r.session for r in service.floor_status(at(2)).rooms if r.session]
    assert len(seated) == 2


def test_a_group_whose_commit_fails_is_not_run_again_and_every_caller_hears_it(service: FittingRoomService):
    queue = ChangeQueue(service.store)
    runs: list[int] = []

    def arrival(minute: int) -> SessionView:
        runs.append(minute)
        return service.assign(ITEMS, False, at(minute))

    def commit_lost(_conn: object) -> None:
        event.remove(service.store.engine, "commit", commit_lost)  # the next commits go through
        raise ConnectionError("connection lost during COMMIT")

    event.listen(service.store.engine, "commit", commit_lost)
    arrivals = [partial(queue.run, arrival, minute) for minute in range(3)]
    outcomes = asyncio.run(behind_a_held_change(queue, arrivals))
    queue.shutdown()
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes)
    assert runs == [0, 1, 2]  # once each: a commit of unknown outcome is never repeated behind the callers' backs
    # Here the commit never reached the database: the group left nothing, and the store takes changes again.
    assert service.assign(ITEMS, False, at(4)).session.room_id is not None
    assert len([r for r in service.floor_status(at(5)).rooms if r.session]) == 1
