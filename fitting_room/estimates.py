"""Wait estimates: project the floor forward through the same policy the engine promotes with.

Each occupied room frees after its session's expected remaining time given the time already spent in it
(the duration distribution conditioned on elapsed time, so a session past its median is not "due now"),
and each customer ahead occupies the room they are projected to get for their expected duration.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fitting_room.engine import Floor, Rules, Session, fits, promotion_order

# Below this the projection would tell a customer "now" while nobody has left yet.
MIN_REMAINING_MINUTES = 0.5


def expected_duration(quantiles: Sequence[float]) -> float:
    """Mean duration (minutes) of a distribution given by an evenly spaced quantile grid."""
    return sum(quantiles) / len(quantiles)


def expected_remaining(quantiles: Sequence[float], elapsed: float) -> float:
    """Expected minutes left for a session that has already lasted `elapsed` minutes: E[D - e | D > e]."""
    beyond = [q - elapsed for q in quantiles if q > elapsed]
    if beyond:
        return max(sum(beyond) / len(beyond), MIN_REMAINING_MINUTES)
    # Past every quantile on the grid: the tail beyond it is about as long as the last grid step.
    step = quantiles[-1] - quantiles[-2] if len(quantiles) > 1 else quantiles[-1]
    return max(step, MIN_REMAINING_MINUTES)


@dataclass(frozen=True)
class Projection:
    """Projected minutes until each waiting customer gets a room, and when each room frees."""

    waits: dict[str, float]
    room_free_in: dict[str, float]


def minutes_between(start: datetime, end: datetime) -> float:
    """Minutes from start to end (negative when end is earlier)."""
    return (end - start).total_seconds() / 60.0


def project(floor: Floor, now: datetime, rules: Rules) -> Projection:
    """Project every waiting customer's wait from `now`, room by room, in promotion order."""
    room_free_in: dict[str, float] = {}
    for room in floor.rooms.values():
        session = floor.active.get(room.session_id) if room.session_id else None
        if session is None or session.assigned_at is None:
            room_free_in[room.room_id] = 0.0
            continue
        elapsed = max(minutes_between(session.assigned_at, now), 0.0)
        room_free_in[room.room_id] = expected_remaining(session.prediction.quantiles, elapsed)
    heap = [(t, room_id) for room_id, t in room_free_in.items()]
    heapq.heapify(heap)
    waits: dict[str, float] = {}
    for session in promotion_order(floor.waitlist(), rules):
        waits[session.session_id] = _take_earliest_fitting(floor, heap, session)
    return Projection(waits=waits, room_free_in=room_free_in)


def _take_earliest_fitting(floor: Floor, heap: list[tuple[float, str]], session: Session) -> float:
    skipped: list[tuple[float, str]] = []
    while heap:
        free_in, room_id = heapq.heappop(heap)
        if fits(floor.rooms[room_id].spec, session.item_count, session.needs_accessible):
            start = max(free_in, MIN_REMAINING_MINUTES)
            heapq.heappush(heap, (start + expected_duration(session.prediction.quantiles), room_id))
            for item in skipped:
                heapq.heappush(heap, item)
            return start
        skipped.append((free_in, room_id))
    raise AssertionError("admission guarantees some room fits every waiting customer")
