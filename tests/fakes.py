"""Stand-in models for service and store tests: deterministic, instant, no training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fitting_room.catalog import Catalog
from fitting_room.engine import Prediction, RoomSpec, Rules
from fitting_room.rooms import DEFAULT_STORE
from fitting_room.service import FittingRoomService
from fitting_room.store import Store
from tests.engine_factories import lognormal_prediction

CATALOG = Catalog.from_mapping(
    {f"sku-{i:04d}": {"category": "tops" if i % 2 else "trousers", "price": 10.0 + i} for i in range(200)}
)


class FakePredictor:
    """Every item adds five minutes; lognormal spread."""

    def estimate(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> Prediction:
        return lognormal_prediction(5.0 * len(item_ids))

    def interval(
        self, item_ids: Sequence[str], entry_time: datetime, catalog: Catalog, level: float = 0.9
    ) -> Prediction:
        return self.estimate(item_ids, entry_time, catalog, level)


@dataclass(frozen=True)
class FakeReason:
    code: str
    message: str


@dataclass(frozen=True)
class FakeResult:
    missing_items: list[str]
    unexpected_items: list[str]
    reasons: list[FakeReason] = field(default_factory=list)

    @property
    def is_anomaly(self) -> bool:
        return bool(self.missing_items or self.unexpected_items)

    @property
    def anomaly_score(self) -> float:
        return 0.9 if self.is_anomaly else 0.1

    @property
    def risk_level(self) -> str:
        return "high" if self.is_anomaly else "low"


class FakeDetector:
    """Flags any missing or unexpected item."""

    def analyse(
        self,
        *,
        entry_scans: Sequence[str],
        exit_scans: Sequence[str],
        duration: float,
        estimate: Prediction,
        catalog: Catalog,
        predictor: Any,
        entry_time: datetime | None = None,
    ) -> FakeResult:
        missing = sorted(set(entry_scans) - set(exit_scans))
        unexpected = sorted(set(exit_scans) - set(entry_scans))
        reasons = [FakeReason("missing_items", f"{len(missing)} items not scanned out")] if missing else []
        return FakeResult(missing, unexpected, reasons)


def make_service(
    db: Path | str, rooms: Sequence[RoomSpec], rules: Rules | None = None, store_id: str = DEFAULT_STORE
) -> FittingRoomService:
    """A service with fake models over a database: a SQLite file path or any SQLAlchemy URL."""
    store = Store(db if isinstance(db, str) else f"sqlite:///{db}", store_id)
    store.create_schema()
    with store.write() as tx:
        tx.sync_rooms(list(rooms))
    return FittingRoomService(store, rules or Rules(), CATALOG, FakePredictor(), FakeDetector())
