"""The state store: rooms, sessions, waitlist and alerts in one database through SQLAlchemy 2 Core.

SQLite (WAL) by default; the tables and statements are plain Core so PostgreSQL is configuration. Every
write runs in one transaction that first locks the store's state row (BEGIN IMMEDIATE on SQLite, FOR UPDATE
elsewhere), so concurrent requests and several processes see one order of events. Database constraints back
the engine's invariants: one active session per room and one room per session.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.types import TypeDecorator

from fitting_room.engine import (
    ACTIVE,
    Changes,
    Floor,
    Prediction,
    Room,
    RoomSpec,
    Session,
    SessionStatus,
)
from fitting_room.errors import NotFoundError


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
)

rooms_table = Table(
    "rooms",
    metadata,
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
    Column("status", String(16), nullable=False),
    Column("item_ids", JSON, nullable=False),
    Column("needs_accessible", Boolean, nullable=False),
    Column("arrived_at", UTCDateTime, nullable=False),
    Column("queue_seq", Integer, nullable=True, unique=True),
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
Index(
    "one_active_session_per_room",
    sessions_table.c.room_id,
    unique=True,
    sqlite_where=sessions_table.c.status == SessionStatus.ASSIGNED.value,
    postgresql_where=sessions_table.c.status == SessionStatus.ASSIGNED.value,
)
Index("sessions_by_status", sessions_table.c.status)

alerts_table = Table(
    "alerts",
    metadata,
    Column("alert_id", Integer, primary_key=True, autoincrement=True),
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
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
)

idempotency_table = Table(
    "idempotency_keys",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("response", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)

DEFAULT_STORE = "default"


@dataclass(frozen=True)
class Alert:
    """A flagged session waiting for (or carrying) a staff outcome."""

    alert_id: int
    session_id: str
    room_id: str
    raised_at: datetime
    anomaly_score: float
    risk_level: str
    reasons: list[dict[str, str]]
    missing_items: list[str]
    unexpected_items: list[str]
    status: str
    outcome: str | None
    note: str | None
    resolved_at: datetime | None


@dataclass(frozen=True)
class Event:
    """One committed change, in commit order: what live dashboards replay."""

    event_id: int
    kind: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Completion:
    """What an exit check recorded for a finished session."""

    exit_scans: list[str]
    actual_duration: float
    anomaly: dict[str, Any]


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling is switched off so that BEGIN IMMEDIATE below is ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front, so two writers never both read the old state.
    immediate = conn.get_execution_options().get("immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the URL, with SQLite set up for WAL, durability and our locking."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """The one place state lives; `write()` and `read()` hand out transactions over it."""

    def __init__(self, url: str, store_id: str = DEFAULT_STORE) -> None:
        self.engine = make_engine(url)
        self.store_id = store_id
        # Writers in this process queue here instead of spinning on the database lock.
        self._write_lock = threading.Lock()
        self._current: ContextVar[Transaction | None] = ContextVar(f"store-tx-{id(self)}", default=None)

    def create_schema(self) -> None:
        """Create missing tables and this store's state row."""
        metadata.create_all(self.engine)
        with self.write() as tx:
            tx.ensure_store_row()

    def close(self) -> None:
        """Release pooled connections."""
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A transaction that holds the store's write lock and commits when the block ends cleanly.

        Inside an open write transaction of the same context, it joins that one: a caller can wrap several
        operations (e.g. a change and its idempotency record) into one commit.
        """
        current = self._current.get()
        if current is not None and current.writable:
            yield current
            return
        with self._write_lock, self.engine.connect() as conn:
            conn = conn.execution_options(immediate=True)
            with conn.begin():
                tx = Transaction(conn, self.store_id, writable=True)
                tx.lock_store()
                token = self._current.set(tx)
                try:
                    yield tx
                finally:
                    self._current.reset(token)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A read-only transaction over one consistent snapshot (or the open transaction of this context)."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn, conn.begin():
            yield Transaction(conn, self.store_id)

    def ping(self) -> None:
        """Prove the database answers and accepts a write transaction."""
        with self.write():
            pass


class Transaction:
    """Reads and writes of one transaction, in the engine's types."""

    def __init__(self, conn: Connection, store_id: str, writable: bool = False) -> None:
        self.conn = conn
        self.store_id = store_id
        self.writable = writable

    def ensure_store_row(self) -> None:
        """Insert this store's state row if it is missing."""
        found = self.conn.execute(select(store_state.c.store_id).where(store_state.c.store_id == self.store_id)).first()
        if found is None:
            self.conn.execute(insert(store_state).values(store_id=self.store_id, next_queue_seq=1))

    def lock_store(self) -> None:
        """Lock the store's state row (FOR UPDATE where the database has it) for this transaction."""
        self.conn.execute(
            select(store_state.c.next_queue_seq).where(store_state.c.store_id == self.store_id).with_for_update()
        )

    def sync_rooms(self, specs: Sequence[RoomSpec]) -> list[str]:
        """Make the rooms table match the rooms file; returns ids of occupied rooms kept though removed."""
        existing = {r.room_id: r for r in self.conn.execute(select(rooms_table)).mappings()}
        wanted = {s.room_id for s in specs}
        for spec in specs:
            values = {
                "max_items": spec.max_items,
                "accessible": spec.accessible,
                "attributes": dict(spec.attributes),
            }
            if spec.room_id in existing:
                self.conn.execute(update(rooms_table).where(rooms_table.c.room_id == spec.room_id).values(**values))
            else:
                self.conn.execute(insert(rooms_table).values(room_id=spec.room_id, **values))
        kept = []
        for room_id, row in existing.items():
            if room_id in wanted:
                continue
            if row["session_id"] is None:
                self.conn.execute(rooms_table.delete().where(rooms_table.c.room_id == room_id))
            else:
                kept.append(room_id)
        return kept

    def room_exists(self, room_id: str) -> bool:
        """True when the room is configured (one indexed lookup, no floor load)."""
        query = select(rooms_table.c.room_id).where(rooms_table.c.room_id == room_id)
        return self.conn.execute(query).first() is not None

    def load_floor(self) -> Floor:
        """The store's rooms and active sessions."""
        rooms = {
            row["room_id"]: _room_from_row(row)
            for row in self.conn.execute(select(rooms_table).order_by(rooms_table.c.room_id)).mappings()
        }
        active_rows = self.conn.execute(
            select(sessions_table).where(sessions_table.c.status.in_([s.value for s in ACTIVE]))
        ).mappings()
        active = {row["session_id"]: _session_from_row(row) for row in active_rows}
        next_seq = self.conn.execute(
            select(store_state.c.next_queue_seq).where(store_state.c.store_id == self.store_id)
        ).scalar_one()
        return Floor(rooms=rooms, active=active, next_queue_seq=next_seq)

    def save(self, floor: Floor, changes: Changes, ended: Iterable[Session] = ()) -> None:
        """Write the rows an engine operation touched (`ended` holds sessions that left the floor)."""
        by_id = {s.session_id: s for s in ended} | floor.active
        known = self._existing_session_ids(changes.sessions)
        # Sessions leaving a room are written before those entering one: the unique index sees no overlap.
        touched = sorted(
            (by_id[sid] for sid in changes.sessions),
            key=lambda s: s.status is SessionStatus.ASSIGNED,
        )
        for session in touched:
            values = _session_values(session)
            if session.session_id in known:
                self.conn.execute(
                    update(sessions_table).where(sessions_table.c.session_id == session.session_id).values(**values)
                )
            else:
                self.conn.execute(insert(sessions_table).values(session_id=session.session_id, **values))
        for room_id in sorted(changes.rooms, key=lambda rid: floor.rooms[rid].session_id is not None):
            room = floor.rooms[room_id]
            self.conn.execute(
                update(rooms_table)
                .where(rooms_table.c.room_id == room_id)
                .values(
                    session_id=room.session_id,
                    free_since=room.free_since,
                    last_event_at=room.last_event_at,
                )
            )
        self.conn.execute(
            update(store_state)
            .where(store_state.c.store_id == self.store_id)
            .values(next_queue_seq=floor.next_queue_seq)
        )
        for session in touched:
            self.log_event(
                f"session_{session.status.value}",
                {"session_id": session.session_id, "room_id": session.room_id},
            )

    def log_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Append a change to the event log; it commits (or not) with the change itself."""
        self.conn.execute(insert(events_table).values(kind=kind, payload=payload))

    def events_after(self, event_id: int, limit: int = 500) -> list[Event]:
        """Committed events newer than `event_id`, oldest first."""
        rows = self.conn.execute(
            select(events_table)
            .where(events_table.c.event_id > event_id)
            .order_by(events_table.c.event_id)
            .limit(limit)
        ).mappings()
        return [Event(r["event_id"], r["kind"], dict(r["payload"])) for r in rows]

    def last_event_id(self) -> int:
        """Id of the newest event, 0 when there is none."""
        return int(self.conn.execute(select(func.coalesce(func.max(events_table.c.event_id), 0))).scalar_one())

    def _existing_session_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()
        rows = self.conn.execute(select(sessions_table.c.session_id).where(sessions_table.c.session_id.in_(wanted)))
        return {r[0] for r in rows}

    def get_idempotency(self, key: str) -> tuple[str, dict[str, Any]] | None:
        """Fingerprint and stored response of an idempotency key, if it was used."""
        row = self.conn.execute(
            select(idempotency_table.c.fingerprint, idempotency_table.c.response).where(
                idempotency_table.c.store_id == self.store_id, idempotency_table.c.key == key
            )
        ).first()
        return None if row is None else (row[0], dict(row[1]))

    def put_idempotency(self, key: str, fingerprint: str, response: dict[str, Any], now: datetime) -> None:
        """Remember the response given under an idempotency key."""
        self.conn.execute(
            insert(idempotency_table).values(
                store_id=self.store_id, key=key, fingerprint=fingerprint, response=response, created_at=now
            )
        )

    def purge_idempotency(self, before: datetime) -> None:
        """Forget idempotency keys used before `before`."""
        self.conn.execute(idempotency_table.delete().where(idempotency_table.c.created_at < before))

    def get_session(self, session_id: str) -> tuple[Session, Completion | None]:
        """Any session, active or finished, with its exit record; NotFoundError if unknown."""
        row = (
            self.conn.execute(select(sessions_table).where(sessions_table.c.session_id == session_id))
            .mappings()
            .first()
        )
        if row is None:
            raise NotFoundError(f"unknown session {session_id!r}")
        completion = None
        if row["exit_scans"] is not None:
            completion = Completion(
                exit_scans=list(row["exit_scans"]),
                actual_duration=float(row["actual_duration"]),
                anomaly=dict(row["anomaly"] or {}),
            )
        return _session_from_row(row), completion

    def session_exists(self, session_id: str) -> bool:
        """True when the store has ever seen this session id."""
        return bool(self._existing_session_ids([session_id]))

    def record_completion(self, session_id: str, completion: Completion) -> None:
        """Store a finished session's exit scans, duration and anomaly result."""
        self.conn.execute(
            update(sessions_table)
            .where(sessions_table.c.session_id == session_id)
            .values(
                exit_scans=completion.exit_scans,
                actual_duration=completion.actual_duration,
                anomaly=completion.anomaly,
            )
        )

    def add_alert(self, alert: dict[str, Any]) -> int:
        """Open an alert for a flagged session; returns its id."""
        result = self.conn.execute(insert(alerts_table).values(status="open", **alert))
        key = result.inserted_primary_key
        assert key is not None
        alert_id = int(key[0])
        self.log_event("alert_raised", {"alert_id": alert_id, "session_id": alert["session_id"]})
        return alert_id

    def list_alerts(self, status: str | None = None, limit: int = 100) -> list[Alert]:
        """Alerts, open ones first, newest first within each group."""
        query = select(alerts_table)
        if status is not None:
            query = query.where(alerts_table.c.status == status)
        query = query.order_by((alerts_table.c.status == "open").desc(), alerts_table.c.raised_at.desc()).limit(limit)
        return [_alert_from_row(r) for r in self.conn.execute(query).mappings()]

    def get_alert(self, alert_id: int) -> Alert:
        """One alert; NotFoundError if unknown."""
        row = self.conn.execute(select(alerts_table).where(alerts_table.c.alert_id == alert_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"unknown alert {alert_id}")
        return _alert_from_row(row)

    def resolve_alert(self, alert_id: int, outcome: str, note: str | None, now: datetime) -> None:
        """Record staff's outcome for an alert."""
        self.conn.execute(
            update(alerts_table)
            .where(alerts_table.c.alert_id == alert_id)
            .values(status="resolved", outcome=outcome, note=note, resolved_at=now)
        )
        self.log_event("alert_resolved", {"alert_id": alert_id, "outcome": outcome})

    def finished_sessions(self) -> list[dict[str, Any]]:
        """Completed sessions with their exit record and any staff outcome, oldest first."""
        query = (
            select(sessions_table, alerts_table.c.outcome)
            .select_from(sessions_table.outerjoin(alerts_table))
            .where(sessions_table.c.status == SessionStatus.COMPLETED.value)
            .where(sessions_table.c.exit_scans.is_not(None))
            .order_by(sessions_table.c.assigned_at)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def count_waiting(self) -> int:
        """Number of waitlisted sessions."""
        query = select(func.count()).where(sessions_table.c.status == SessionStatus.WAITLISTED.value)
        return int(self.conn.execute(query).scalar_one())


def _room_from_row(row: RowMapping) -> Room:
    spec = RoomSpec(
        room_id=row["room_id"],
        max_items=row["max_items"],
        accessible=bool(row["accessible"]),
        attributes=dict(row["attributes"] or {}),
    )
    return Room(
        spec=spec,
        session_id=row["session_id"],
        free_since=row["free_since"],
        last_event_at=row["last_event_at"],
    )


def _session_from_row(row: RowMapping) -> Session:
    prediction = Prediction(
        median=row["predicted_duration"],
        low=row["interval_low"],
        high=row["interval_high"],
        level=row["interval_level"],
        quantiles=tuple(row["duration_quantiles"]),
        unknown_item_ids=tuple(row["unknown_item_ids"]),
    )
    return Session(
        session_id=row["session_id"],
        item_ids=tuple(row["item_ids"]),
        needs_accessible=bool(row["needs_accessible"]),
        arrived_at=row["arrived_at"],
        prediction=prediction,
        status=SessionStatus(row["status"]),
        queue_seq=row["queue_seq"],
        passed_over=row["passed_over"],
        room_id=row["room_id"],
        assigned_at=row["assigned_at"],
        ended_at=row["ended_at"],
        last_event_at=row["last_event_at"],
    )


def _session_values(session: Session) -> dict[str, Any]:
    p = session.prediction
    return {
        "status": session.status.value,
        "item_ids": list(session.item_ids),
        "needs_accessible": session.needs_accessible,
        "arrived_at": session.arrived_at,
        "queue_seq": session.queue_seq,
        "passed_over": session.passed_over,
        "room_id": session.room_id,
        "assigned_at": session.assigned_at,
        "ended_at": session.ended_at,
        "last_event_at": session.last_event_at,
        "predicted_duration": p.median,
        "interval_low": p.low,
        "interval_high": p.high,
        "interval_level": p.level,
        "duration_quantiles": list(p.quantiles),
        "unknown_item_ids": list(p.unknown_item_ids),
    }


def _alert_from_row(row: RowMapping) -> Alert:
    return Alert(
        alert_id=row["alert_id"],
        session_id=row["session_id"],
        room_id=row["room_id"],
        raised_at=row["raised_at"],
        anomaly_score=row["anomaly_score"],
        risk_level=row["risk_level"],
        reasons=list(row["reasons"]),
        missing_items=list(row["missing_items"]),
        unexpected_items=list(row["unexpected_items"]),
        status=row["status"],
        outcome=row["outcome"],
        note=row["note"],
        resolved_at=row["resolved_at"],
    )
