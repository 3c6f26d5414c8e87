"""Small builders for engine tests: rooms, sessions and predictions without a model."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from itertools import count

from fitting_room.engine import Floor, Prediction, Room, RoomSpec, Session, admit

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """T0 plus some minutes."""
    return T0 + timedelta(minutes=minutes)


def lognormal_prediction(median: float, sigma: float = 0.3) -> Prediction:
    """A prediction whose quantile grid is an exact lognormal(median, sigma)."""
    from statistics import NormalDist

    z = NormalDist()
    grid = tuple(median * math.exp(sigma * z.inv_cdf(p / 100)) for p in range(1, 100))
    return Prediction(
        median=median,
        low=median * math.exp(sigma * z.inv_cdf(0.05)),
        high=median * math.exp(sigma * z.inv_cdf(0.95)),
        level=0.9,
        quantiles=grid,
    )


def constant_prediction(minutes: float) -> Prediction:
    """A prediction with no spread: the session lasts exactly `minutes`."""
    return Prediction(median=minutes, low=minutes, high=minutes, level=0.9, quantiles=(minutes,) * 99)


def make_floor(*specs: tuple[str, int, bool]) -> Floor:
    """A floor with free rooms (room_id, max_items, accessible)."""
    rooms = {rid: Room(RoomSpec(rid, max_items, accessible)) for rid, max_items, accessible in specs}
    return Floor(rooms=rooms, active={})


class SessionFactory:
    """Sessions with sequential ids."""

    def __init__(self) -> None:
        self._ids = count(1)

    def __call__(
        self,
        items: int = 2,
        accessible: bool = False,
        minutes: float = 10.0,
        arrived: datetime = T0,
        prediction: Prediction | None = None,
    ) -> Session:
        """A new, not yet admitted session."""
        return Session(
            session_id=f"s{next(self._ids)}",
            item_ids=tuple(f"sku-{i:04d}" for i in range(items)),
            needs_accessible=accessible,
            arrived_at=arrived,
            prediction=prediction or constant_prediction(minutes),
        )


def hand_computed_floor(new: SessionFactory) -> tuple[Floor, Session, Session, Session]:
    """Room a (4 items) frees at 10, room b (10 items) at 20; three 5-minute customers wait since minute 1."""
    floor = make_floor(("a", 4, False), ("b", 10, False))
    admit(floor, new(items=2, minutes=10), at(0))
    admit(floor, new(items=8, minutes=20), at(0))
    s1, bulky, s3 = new(items=2, minutes=5), new(items=8, minutes=5), new(items=2, minutes=5)
    for s in (s1, bulky, s3):
        admit(floor, s, at(1))
    return floor, s1, bulky, s3
