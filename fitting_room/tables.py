"""The database schema of the state store (SQLAlchemy 2 Core tables) and the statements every request runs.

Every table carries the store's id, so one database holds a chain. Alembic's migrations (fitting_room/migrations)
create and change these tables; the schema they produce is tested to equal this metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.sql.dml import Update
from sqlalchemy.types import TypeDecorator

from fitting_room.engine import SessionStatus


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as naive UTC, identical on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to naive UTC for storage."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime reached the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return stored naive UTC as an aware datetime."""
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

store_state = Table(
    "store_state",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("next_queue_seq", Integer, nullable=False),
    Column("floor_version", Integer, nullable=False, server_default="0"),
)

rooms_table = Table(
    "rooms",
    metadata,
    Column("store_id", String(64), ForeignKey("store_state.store_id"), primary_key=True),
    Column("room_id", String(64), primary_key=True),
    Column("max_items", Integer, nullable=False),
    Column("accessible", Boolean, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("session_id", String(64), nullable=True, unique=True),
    Column("free_since", UTCDateTime, nullable=True),
    Column("last_event_at", UTCDateTime, nullable=True),
)

sessions_table = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("store_id", String(64), ForeignKey("store_state.store_id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("item_ids", JSON, nullable=False),
    Column("needs_accessible", Boolean, nullable=False),
    Column("arrived_at", UTCDateTime, nullable=False),
    Column("queue_seq", Integer, nullable=True),
    Column("passed_over", Integer, nullable=False),
    Column("room_id", String(64), nullable=True),
    Column("assigned_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("last_event_at", UTCDateTime, nullable=True),
    Column("predicted_duration", Float, nullable=False),
    Column("interval_low", Float, nullable=False),
    Column("interval_high", Float, nullable=False),
    Column("interval_level", Float, nullable=False),
    Column("duration_quantiles", JSON, nullable=False),
    Column("unknown_item_ids", JSON, nullable=False),
    Column("exit_scans", JSON, nullable=True),
    Column("actual_duration", Float, nullable=True),
    Column("anomaly", JSON, nullable=True),
)
# The database itself refuses what the engine promises, even if code is wrong or two replicas race.
Index(
    "one_active_session_per_room",
    sessions_table.c.store_id,
    sessions_table.c.room_id,
    unique=True,
    sqlite_where=sessions_table.c.status == SessionStatus.ASSIGNED.value,
    postgresql_where=sessions_table.c.status == SessionStatus.ASSIGNED.value,
)
Index("one_waitlist_place_per_number", sessions_table.c.store_id, sessions_table.c.queue_seq, unique=True)
Index("sessions_by_status", sessions_table.c.store_id, sessions_table.c.status)
Index("sessions_by_arrival", sessions_table.c.store_id, sessions_table.c.arrived_at)

alerts_table = Table(
    "alerts",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", String(64), ForeignKey("store_state.store_id"), nullable=False, index=True),
    Column("session_id", String(64), ForeignKey("sessions.session_id"), nullable=False, unique=True),
    Column("room_id", String(64), nullable=False),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("anomaly_score", Float, nullable=False),
    Column("risk_level", String(16), nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("missing_items", JSON, nullable=False),
    Column("unexpected_items", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("outcome", String(32), nullable=True),
    Column("note", String(500), nullable=True),
    Column("resolved_at", UTCDateTime, nullable=True),
)

events_table = Table(
    "events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
)
Index("events_by_store", events_table.c.store_id, events_table.c.event_id)

idempotency_table = Table(
    "idempotency_keys",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

# The statements every request runs, built once (bound parameters, so SQLAlchemy reuses their compiled form).
FLOOR_VERSION = select(store_state.c.floor_version).where(store_state.c.store_id == bindparam("store_id"))
LOCK_STORE = FLOOR_VERSION.with_for_update()
SESSION_EXISTS = select(sessions_table.c.session_id).where(
    sessions_table.c.store_id == bindparam("store_id"), sessions_table.c.session_id == bindparam("session_id")
)
# The writes of every change, built once too: a statement made per call costs more to build than to run.
# Keys of the rows are bound as key_*, so their names never clash with the columns being set.
INSERT_SESSION = insert(sessions_table)


def _keyed_update(table: Table, fields: Sequence[str], key: str | None = None) -> Update:
    """UPDATE of `fields` (bound by their own names) in store `key_store_id`'s row whose `key` is `key_<key>`.

    Without `key` the row is the store's own (store_state).
    """
    where = [table.c.store_id == bindparam("key_store_id")]
    if key is not None:
        where.append(table.c[key] == bindparam(f"key_{key}"))
    return update(table).where(*where).values({name: bindparam(name, type_=table.c[name].type) for name in fields})


COMPLETION_FIELDS = ("exit_scans", "actual_duration", "anomaly")
# What an arrival writes of a session: every column but its keys and the exit record, written once at completion.
SESSION_FIELDS = tuple(
    c.name for c in sessions_table.columns if c.name not in ("session_id", "store_id", *COMPLETION_FIELDS)
)
# What a later change may alter; the rest (items, needs, arrival, prediction) stays as the arrival wrote it.
SESSION_STATE_FIELDS = ("status", "queue_seq", "passed_over", "room_id", "assigned_at", "ended_at", "last_event_at")
UPDATE_SESSION = _keyed_update(sessions_table, SESSION_STATE_FIELDS, "session_id")
UPDATE_ENDED_SESSION = _keyed_update(sessions_table, SESSION_STATE_FIELDS + COMPLETION_FIELDS, "session_id")
UPDATE_ROOM = _keyed_update(rooms_table, ("session_id", "free_since", "last_event_at"), "room_id")
UPDATE_QUEUE_SEQ = _keyed_update(store_state, ("next_queue_seq",))
UPDATE_FLOOR_VERSION = _keyed_update(store_state, ("floor_version",))
UPDATE_FLOOR_STATE = _keyed_update(store_state, ("floor_version", "next_queue_seq"))
INSERT_EVENT = insert(events_table)
