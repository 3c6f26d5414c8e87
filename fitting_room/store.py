"""The state store: rooms, sessions, waitlist and alerts in one database through SQLAlchemy 2 Core.

SQLite (WAL) by default; the tables and statements (fitting_room/tables.py) are plain Core, so PostgreSQL is
configuration. Every write runs in one transaction that first locks the store's state row (BEGIN IMMEDIATE on
SQLite, FOR UPDATE elsewhere), so concurrent requests and several processes see one order of events. Database
constraints back the engine's invariants: one active session per room and one room per session.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from contextvars import Context, ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import (
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.sql.elements import ColumnElement

from fitting_room.change_probe import ChangeProbe
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
from fitting_room.estimates import MIX_SIZE, PastArrival
from fitting_room.notify import CHANNEL, Doorbell, PostgresListener
from fitting_room.rooms import DEFAULT_STORE
from fitting_room.tables import (
    FLOOR_VERSION,
    INSERT_EVENT,
    INSERT_SESSION,
    LOCK_STORE,
    SESSION_EXISTS,
    UPDATE_ENDED_SESSION,
    UPDATE_FLOOR_STATE,
    UPDATE_FLOOR_VERSION,
    UPDATE_QUEUE_SEQ,
    UPDATE_ROOM,
    UPDATE_SESSION,
    alerts_table,
    events_table,
    idempotency_table,
    rooms_table,
    sessions_table,
    store_state,
)

T = TypeVar("T")


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
        # No rollback when a connection returns to the pool: the driver is in autocommit mode and every transaction
        # is ours (BEGIN below) and ends with its block, so there is nothing to reset, and the call cost every change.
        # No cap on connections either: each store of a chain holds one for its writes (`held_connection`), and a
        # file has no server whose connection slots could run out.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_reset_on_return=None,
            max_overflow=-1,
        )
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Database:
    """One database shared by every store of a chain: the engine, its schema and this process's write locks."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        # Writers of one store in this process queue here instead of spinning on the database lock.
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self.bell = Doorbell()
        self._listener: PostgresListener | None = None
        self._probe: ChangeProbe | None = None
        self._probe_guard = threading.Lock()
        self._held: dict[str, Connection] = {}

    @property
    def is_postgresql(self) -> bool:
        """True on PostgreSQL, where replicas share the database and hear each other's NOTIFY."""
        return self.engine.dialect.name == "postgresql"

    def listen(self) -> None:
        """Ring `bell` for changes other processes commit too (PostgreSQL LISTEN); a no-op elsewhere."""
        if self.is_postgresql and self._listener is None:
            self._listener = PostgresListener(self.url, self.bell)
            self._listener.start()

    def store(self, store_id: str = DEFAULT_STORE) -> Store:
        """The view of one store's rows."""
        return Store(self, store_id)

    @property
    def probe(self) -> ChangeProbe | None:
        """The SQLite file's change probe, opened on first use; None on other databases."""
        if self._probe is None and ChangeProbe.supports(self.engine):
            with self._probe_guard:
                if self._probe is None:
                    self._probe = ChangeProbe(self.engine)
        return self._probe

    def floor_lock(self, store_id: str) -> threading.RLock:
        """This process's lock over `store_id`'s writers and its in-memory floor."""
        with self._locks_guard:
            return self._locks.setdefault(store_id, threading.RLock())

    def held_connection(self, store_id: str) -> Connection | None:
        """The connection `store_id`'s writers reuse, under its floor lock: SQLite only (None on PostgreSQL).

        A checkout from the pool and the check-in after cost more than most statements of a change; a local file's
        connection never goes stale, so each store keeps one open until close() (a broken one is replaced).
        """
        if self.is_postgresql:
            return None
        conn = self._held.get(store_id)
        if conn is None or conn.closed or conn.invalidated:
            if conn is not None:
                conn.close()
            conn = self._held[store_id] = self.engine.connect().execution_options(immediate=True)
        return conn

    def migrate(self) -> None:
        """Bring the schema to the newest migration (creates it in an empty database)."""
        from fitting_room.migrations import upgrade

        upgrade(self.engine)

    def close(self) -> None:
        """Stop listening and release pooled connections."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        for conn in self._held.values():
            conn.close()
        self._held.clear()
        self.engine.dispose()


class Store:
    """One store's rooms, sessions and alerts; `write()` and `read()` hand out transactions over them."""

    def __init__(self, database: Database | str, store_id: str = DEFAULT_STORE) -> None:
        self.database = Database(database) if isinstance(database, str) else database
        self.engine = self.database.engine
        self.store_id = store_id
        # Writers queue here instead of spinning on the database lock; readers of the cached floor hold it too,
        # because writers change that floor in place.
        self._lock = self.database.floor_lock(store_id)
        self._cache = FloorCache()
        # (data_version, floor_version) when a read last found the cached floor current: while the probe still
        # shows that data_version and the cache still holds that floor_version, nothing has changed since.
        self._verified: tuple[int, int] | None = None
        self._current: ContextVar[Transaction | None] = ContextVar(f"store-tx-{id(self)}", default=None)

    def create_schema(self) -> None:
        """Migrate the database to the newest schema and add this store's state row."""
        self.database.migrate()
        self.ensure_store_row()

    def ensure_store_row(self) -> None:
        """Add this store's state row if it is missing (replicas starting together may race: one wins)."""
        try:
            with self.engine.connect() as conn, conn.begin():
                Transaction(conn, self.store_id).ensure_store_row()
        except IntegrityError:
            pass  # another process inserted it between our check and our insert

    def close(self) -> None:
        """Release pooled connections."""
        self.database.close()

    @property
    def in_transaction(self) -> bool:
        """True inside a transaction of this context (a retry must then start from the outermost one)."""
        return self._current.get() is not None

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
        with self.together() as batch, batch.current() as tx:  # a batch of one change
            yield tx

    @contextmanager
    def together(self) -> Iterator[Batch]:
        """One write transaction and one commit for several changes, each run by `Batch.run` as if in a transaction
        of its own (it sees the changes before it and commits a floor version of its own); a failure of any rolls
        back all of them. A commit's fsync is most of a small change's time: changes queued behind one share it."""
        with self._lock, self._write_connection() as conn:
            try:
                with conn.begin():
                    batch = Batch(self, Transaction(conn, self.store_id, writable=True, cache=self._cache))
                    batch.tx.lock_store()
                    yield batch
            except BaseException:
                self._cache.clear()  # the floor may hold changes the database rolled back
                raise
            self._cache.committed(batch.tx)
        if batch.logged:
            self.database.bell.ring()

    def _write_connection(self) -> AbstractContextManager[Connection]:
        """The store's held connection (kept open after the block), else one from the pool (returned after)."""
        held = self.database.held_connection(self.store_id)
        if held is not None:
            return _reusing(held)
        return self.engine.connect().execution_options(immediate=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock across several steps (a change, then reading the floor it left)."""
        with self._lock:
            yield

    @contextmanager
    def floor(self, wait: bool = True) -> Iterator[FloorSnapshot]:
        """The store's current floor and its version, to read (never change) inside the block.

        With `wait=False` it raises StoreBusyError instead of waiting while a writer of this process holds the floor.
        """
        if not self._lock.acquire(blocking=wait):
            raise StoreBusyError(self.store_id)
        try:
            probe = self.database.probe if self._current.get() is None else None
            seen = probe.data_version() if probe is not None else None
            verified = self._verified
            cached = self._cache.get(verified[1]) if verified is not None and verified[0] == seen else None
            if cached is not None and verified is not None:
                yield FloorSnapshot(cached, verified[1])
                return
            with self.read(cache=self._cache) as tx:
                floor = tx.load_floor()
                version = tx.floor_version
            # `seen` was taken before the read, so a commit racing with it changes the next probe's answer.
            self._verified = (seen, version) if seen is not None and self._cache.get(version) is floor else None
            yield FloorSnapshot(floor, version)
        finally:
            self._lock.release()

    def seen_on_floor(self, session_id: str) -> bool:
        """True when the cached floor, however stale, has the session: the store has seen it, as sessions are never
        deleted. Takes no lock (one dict lookup, atomic under the GIL, while writers change that floor in place)."""
        floor = self._cache.floor
        return floor is not None and session_id in floor.active

    def known_version(self) -> int | None:
        """The floor version as of now if the probe shows nothing committed since a read verified it, else None.

        Takes no lock: a caller that only needs the version (to find a view it kept of it) never queues behind
        other readers or a writer. A writer's uncommitted changes do not count, as for any other reader.
        """
        probe = self.database.probe
        verified = self._verified
        if probe is None or verified is None:
            return None
        return verified[1] if probe.data_version() == verified[0] else None

    def session_exists(self, session_id: str) -> bool:
        """True when the store has ever seen this session id (as of the latest commit)."""
        params = {"store_id": self.store_id, "session_id": session_id}
        probe = self.database.probe if self._current.get() is None else None
        if probe is not None:
            return probe.first(SESSION_EXISTS, params) is not None
        with self.read() as tx:
            return tx.session_exists(session_id)

    @contextmanager
    def read(self, cache: FloorCache | None = None) -> Iterator[Transaction]:
        """A read-only transaction over one consistent snapshot (or the open transaction of this context)."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")  # one snapshot for every query
            with conn.begin():
                yield Transaction(conn, self.store_id, cache=cache)

    def ping(self) -> None:
        """Prove the database answers and accepts a write transaction."""
        with self.write():
            pass

    def retrying(self, action: Callable[[], T]) -> T:
        """Run `action` (one or more write transactions), again when the database refused it as a transient conflict.

        Serialization failures and deadlocks (PostgreSQL) or a lock timeout (SQLite) roll the transaction back
        whole, so running it again is safe. Inside an outer transaction only the outermost caller may retry.
        """
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return action()
            except DBAPIError as err:
                if self.in_transaction or attempt == RETRY_ATTEMPTS or not is_transient(err):
                    raise
                time.sleep(RETRY_BACKOFF_SECONDS * attempt)
        raise AssertionError("unreachable: the last attempt returns or raises")


# SQLSTATEs a transaction may simply be run again after: serialization_failure, deadlock_detected.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
RETRY_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 0.02


def is_transient(err: DBAPIError) -> bool:
    """True when the database refused a transaction that may succeed if run again."""
    sqlstate = getattr(err.orig, "sqlstate", None)
    if sqlstate in TRANSIENT_SQLSTATES:
        return True
    return isinstance(err, OperationalError) and "database is locked" in str(err.orig)


class StoreBusyError(Exception):
    """Answering now means waiting: a writer holds the store's floor, or the line must first be projected.

    Raised only to callers that asked not to wait (`wait=False`), which then ask again from a worker thread.
    """


@dataclass(frozen=True)
class FloorSnapshot:
    """The floor at one committed version (read it inside the block that yielded it; never change it)."""

    floor: Floor
    version: int


@contextmanager
def _reusing(held: Connection) -> Iterator[Connection]:
    """A held connection for one block; after a failure, no transaction is left open on it.

    A commit that fails (a full disk, an I/O error) leaves SQLite's transaction open; the pool's reset would have
    rolled it back, but a held connection never goes back to the pool, and every later BEGIN would fail on it.
    """
    try:
        yield held
    except BaseException:
        try:
            driver = held.connection.driver_connection
            if driver is not None and driver.in_transaction:
                driver.rollback()
        except Exception:
            held.invalidate()  # replaced at the next write (`Database.held_connection`)
        raise


class Batch:
    """Changes sharing one write transaction (`Store.together`), each in a Transaction of its own on its connection."""

    def __init__(self, store: Store, tx: Transaction) -> None:
        self._store = store
        self.tx = tx  # the transaction of the change running or run last
        self._logged_before = False  # whether a change before `tx`'s logged an event
        self._used = False

    @property
    def logged(self) -> bool:
        """Whether any change of the batch logged an event (live streams are woken after the commit)."""
        return self._logged_before or self.tx.logged

    def run(self, context: Context, change: Callable[[], T]) -> T:
        """Run `change` in `context` (a request's), its writes joining the batch's transaction."""
        if self._used:
            self._logged_before = self.logged
            self.tx = self.tx.following()
        self._used = True
        return context.run(self._joined, change)

    @contextmanager
    def current(self) -> Iterator[Transaction]:
        """The running change's transaction, joined by the store's reads and writes in this context meanwhile."""
        token = self._store._current.set(self.tx)
        try:
            yield self.tx
        finally:
            self._store._current.reset(token)

    def _joined(self, change: Callable[[], T]) -> T:
        with self.current():
            return change()


class FloorCache:
    """A store's floor as of one committed `floor_version`, kept in memory between transactions.

    Only transactions holding the store's lock use it. Any process that changes the floor bumps the version in
    the database, so a replica's cache can be stale but is never taken for current.
    """

    def __init__(self) -> None:
        self.version: int | None = None
        self.floor: Floor | None = None

    def get(self, version: int) -> Floor | None:
        """The cached floor if it is the one at `version`."""
        return self.floor if self.version == version else None

    def put(self, version: int, floor: Floor) -> None:
        """Remember `floor` as the one at `version`."""
        self.version, self.floor = version, floor

    def clear(self) -> None:
        """Forget the floor."""
        self.version, self.floor = None, None

    def committed(self, tx: Transaction) -> None:
        """Keep what a committed write transaction left: its floor at the new version, or nothing if unknown."""
        if tx.new_version is None:
            return
        if tx.floor is None:
            self.clear()
        else:
            self.put(tx.new_version, tx.floor)


class Transaction:
    """Reads and writes of one transaction, in the engine's types."""

    def __init__(
        self, conn: Connection, store_id: str, writable: bool = False, cache: FloorCache | None = None
    ) -> None:
        self.conn = conn
        self.store_id = store_id
        self.writable = writable
        self.logged = False
        self.cache = cache
        self.version: int | None = None
        # Set once this transaction changed the floor: the version it commits, and the floor as it leaves it.
        self.new_version: int | None = None
        self.floor: Floor | None = None

    def following(self) -> Transaction:
        """The next change's transaction on the same connection: it starts from this one's floor and version."""
        assert self.writable, "only write transactions are batched"
        after = Transaction(self.conn, self.store_id, writable=True, cache=self.cache)
        after.version = self.floor_version
        after.floor = self.floor
        return after

    @cached_property
    def _rooms(self) -> ColumnElement[bool]:
        return rooms_table.c.store_id == self.store_id

    @cached_property
    def _sessions(self) -> ColumnElement[bool]:
        return sessions_table.c.store_id == self.store_id

    def _room(self, room_id: str) -> ColumnElement[bool]:
        return and_(self._rooms, rooms_table.c.room_id == room_id)

    def _session(self, session_id: str) -> ColumnElement[bool]:
        return and_(self._sessions, sessions_table.c.session_id == session_id)

    def ensure_store_row(self) -> None:
        """Insert this store's state row if it is missing."""
        found = self.conn.execute(select(store_state.c.store_id).where(store_state.c.store_id == self.store_id)).first()
        if found is None:
            self.conn.execute(insert(store_state).values(store_id=self.store_id, next_queue_seq=1))

    def lock_store(self) -> None:
        """Lock the store's state row (FOR UPDATE where the database has it) and read its floor version."""
        self.version = self.conn.execute(LOCK_STORE, {"store_id": self.store_id}).scalar_one()

    @property
    def floor_version(self) -> int:
        """The floor version this transaction sees (after its own changes)."""
        version = self.new_version if self.new_version is not None else self.version
        assert version is not None, "read the floor first"
        return version

    def _bump_version(self, next_queue_seq: int | None = None) -> None:
        """Mark the floor changed: this transaction commits the next version (once, however many changes).

        With `next_queue_seq` the floor's line counter is written too, in the same statement the first time.
        """
        key = {"key_store_id": self.store_id}
        if self.new_version is not None:
            if next_queue_seq is not None:
                self.conn.execute(UPDATE_QUEUE_SEQ, key | {"next_queue_seq": next_queue_seq})
            return
        assert self.version is not None, "write transactions lock the store first"
        self.new_version = self.version + 1
        if next_queue_seq is None:
            self.conn.execute(UPDATE_FLOOR_VERSION, key | {"floor_version": self.new_version})
        else:
            values = {"floor_version": self.new_version, "next_queue_seq": next_queue_seq}
            self.conn.execute(UPDATE_FLOOR_STATE, key | values)

    def sync_rooms(self, specs: Sequence[RoomSpec]) -> list[str]:
        """Make the rooms table match the rooms file; returns ids of occupied rooms kept though removed."""
        existing = {r.room_id: r for r in self.conn.execute(select(rooms_table).where(self._rooms)).mappings()}
        wanted = {s.room_id for s in specs}
        for spec in specs:
            values = {
                "max_items": spec.max_items,
                "accessible": spec.accessible,
                "attributes": dict(spec.attributes),
            }
            if spec.room_id in existing:
                self.conn.execute(update(rooms_table).where(self._room(spec.room_id)).values(**values))
            else:
                self.conn.execute(insert(rooms_table).values(store_id=self.store_id, room_id=spec.room_id, **values))
        # The floor object (if one was read) no longer matches the rows: the next load_floor reads them afresh.
        self.floor = None
        self._bump_version()
        kept = []
        for room_id, row in existing.items():
            if room_id in wanted:
                continue
            if row["session_id"] is None:
                self.conn.execute(rooms_table.delete().where(self._room(room_id)))
            else:
                kept.append(room_id)
        return kept

    def load_floor(self) -> Floor:
        """The store's rooms and active sessions: the cached floor when it is current, else read from the rows."""
        if self.floor is not None:
            return self.floor
        if self.version is None:
            self.version = self.conn.execute(FLOOR_VERSION, {"store_id": self.store_id}).scalar_one()
        cached = self.cache.get(self.version) if self.cache is not None and self.new_version is None else None
        self.floor = cached if cached is not None else self._read_floor()
        if cached is None and self.cache is not None and self.new_version is None:
            self.cache.put(self.version, self.floor)
        return self.floor

    def _read_floor(self) -> Floor:
        rooms = {
            row["room_id"]: _room_from_row(row)
            for row in self.conn.execute(
                select(rooms_table).where(self._rooms).order_by(rooms_table.c.room_id)
            ).mappings()
        }
        active_rows = self.conn.execute(
            select(sessions_table).where(self._sessions, sessions_table.c.status.in_([s.value for s in ACTIVE]))
        ).mappings()
        active = {row["session_id"]: _session_from_row(row) for row in active_rows}
        next_seq = self.conn.execute(
            select(store_state.c.next_queue_seq).where(store_state.c.store_id == self.store_id)
        ).scalar_one()
        return Floor(rooms=rooms, active=active, next_queue_seq=next_seq)

    def save(
        self,
        floor: Floor,
        changes: Changes,
        ended: Iterable[Session] = (),
        completions: Mapping[str, Completion] | None = None,
    ) -> None:
        """Write the rows an engine operation touched (`ended` holds sessions that left the floor, `completions`
        what exit checks recorded for some of them)."""
        self.floor = floor
        left = {s.session_id: s for s in ended}
        # Sessions leaving a room are written before those entering one: the unique index sees no overlap.
        touched = sorted(
            (floor.active[sid] if sid in floor.active else left[sid] for sid in changes.sessions),
            key=lambda s: s.status is SessionStatus.ASSIGNED,
        )
        for session in touched:
            if session.session_id in changes.arrived:
                values = {"session_id": session.session_id, "store_id": self.store_id} | _session_values(session)
                self.conn.execute(INSERT_SESSION, values)
                continue
            keys = {"key_store_id": self.store_id, "key_session_id": session.session_id}
            completion = completions.get(session.session_id) if completions else None
            if completion is None:
                written = self.conn.execute(UPDATE_SESSION, keys | _state_values(session))
            else:
                written = self.conn.execute(UPDATE_ENDED_SESSION, keys | _state_values(session) | vars(completion))
            if written.rowcount != 1:
                # Rolls the change back: a session on the floor without its row would be lost at the next load.
                raise LookupError(f"session {session.session_id!r} of store {self.store_id!r} has no row")
        for room_id in sorted(changes.rooms, key=lambda rid: floor.rooms[rid].session_id is not None):
            room = floor.rooms[room_id]
            self.conn.execute(
                UPDATE_ROOM,
                {
                    "key_store_id": self.store_id,
                    "key_room_id": room_id,
                    "session_id": room.session_id,
                    "free_since": room.free_since,
                    "last_event_at": room.last_event_at,
                },
            )
        self._bump_version(floor.next_queue_seq)
        for session in touched:
            self.log_event(
                f"session_{session.status.value}",
                {"session_id": session.session_id, "room_id": session.room_id},
            )

    def log_event(self, kind: str, payload: dict[str, Any]) -> None:
        """Append a change to the event log; it commits (or not) with the change itself."""
        self.conn.execute(INSERT_EVENT, {"store_id": self.store_id, "kind": kind, "payload": payload})
        if not self.logged and self.conn.dialect.name == "postgresql":
            # Delivered at commit, to every replica's listener; never if the change rolls back.
            self.conn.execute(select(func.pg_notify(CHANNEL, self.store_id)))
        self.logged = True

    def events_after(self, event_id: int, limit: int = 500) -> list[Event]:
        """Committed events newer than `event_id`, oldest first."""
        rows = self.conn.execute(
            select(events_table)
            .where(events_table.c.store_id == self.store_id, events_table.c.event_id > event_id)
            .order_by(events_table.c.event_id)
            .limit(limit)
        ).mappings()
        return [Event(r["event_id"], r["kind"], dict(r["payload"])) for r in rows]

    def last_event_id(self) -> int:
        """Id of the newest event, 0 when there is none."""
        newest = select(func.coalesce(func.max(events_table.c.event_id), 0)).where(
            events_table.c.store_id == self.store_id
        )
        return int(self.conn.execute(newest).scalar_one())

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
        self.conn.execute(
            idempotency_table.delete().where(
                idempotency_table.c.store_id == self.store_id, idempotency_table.c.created_at < before
            )
        )

    def get_session(self, session_id: str) -> tuple[Session, Completion | None]:
        """Any session, active or finished, with its exit record; NotFoundError if unknown."""
        row = self.conn.execute(select(sessions_table).where(self._session(session_id))).mappings().first()
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

    def recent_arrivals(self, at: datetime | None = None, limit: int = MIX_SIZE) -> list[PastArrival]:
        """The store's `limit` latest arrivals (up to `at`), newest first, whatever became of them since."""
        s = sessions_table.c
        query = (
            select(s.arrived_at, s.item_ids, s.needs_accessible, s.predicted_duration, s.duration_quantiles)
            .where(self._sessions, *([s.arrived_at <= at] if at is not None else []))
            .order_by(s.arrived_at.desc())
            .limit(limit)
        )
        return [
            PastArrival(
                arrived_at=row.arrived_at,
                item_count=len(row.item_ids),
                needs_accessible=bool(row.needs_accessible),
                median=float(row.predicted_duration),
                quantiles=tuple(map(float, row.duration_quantiles)),
            )
            for row in self.conn.execute(query)
        ]

    def session_exists(self, session_id: str) -> bool:
        """True when the store has ever seen this session id."""
        found = self.conn.execute(SESSION_EXISTS, {"store_id": self.store_id, "session_id": session_id}).first()
        return found is not None

    def add_alert(self, alert: dict[str, Any]) -> int:
        """Open an alert for a flagged session; returns its id."""
        result = self.conn.execute(insert(alerts_table).values(store_id=self.store_id, status="open", **alert))
        key = result.inserted_primary_key
        assert key is not None
        alert_id = int(key[0])
        self.log_event("alert_raised", {"alert_id": alert_id, "session_id": alert["session_id"]})
        return alert_id

    def list_alerts(self, status: str | None = None, limit: int = 100) -> list[Alert]:
        """Alerts, open ones first, newest first within each group."""
        query = select(alerts_table).where(alerts_table.c.store_id == self.store_id)
        if status is not None:
            query = query.where(alerts_table.c.status == status)
        query = query.order_by((alerts_table.c.status == "open").desc(), alerts_table.c.raised_at.desc()).limit(limit)
        return [_alert_from_row(r) for r in self.conn.execute(query).mappings()]

    def get_alert(self, alert_id: int) -> Alert:
        """One alert; NotFoundError if unknown."""
        query = select(alerts_table).where(
            alerts_table.c.store_id == self.store_id, alerts_table.c.alert_id == alert_id
        )
        row = self.conn.execute(query).mappings().first()
        if row is None:
            raise NotFoundError(f"unknown alert {alert_id}")
        return _alert_from_row(row)

    def resolve_alert(self, alert_id: int, outcome: str, note: str | None, now: datetime) -> None:
        """Record staff's outcome for an alert."""
        self.conn.execute(
            update(alerts_table)
            .where(alerts_table.c.store_id == self.store_id, alerts_table.c.alert_id == alert_id)
            .values(status="resolved", outcome=outcome, note=note, resolved_at=now)
        )
        self.log_event("alert_resolved", {"alert_id": alert_id, "outcome": outcome})

    def finished_sessions(self) -> list[dict[str, Any]]:
        """Completed sessions with their exit record and any staff outcome, oldest first."""
        query = (
            select(sessions_table, alerts_table.c.outcome)
            .select_from(sessions_table.outerjoin(alerts_table))
            .where(self._sessions, sessions_table.c.status == SessionStatus.COMPLETED.value)
            .where(sessions_table.c.exit_scans.is_not(None))
            .order_by(sessions_table.c.assigned_at)
        )
        return [dict(r) for r in self.conn.execute(query).mappings()]

    def count_waiting(self) -> int:
        """Number of waitlisted sessions."""
        query = select(func.count()).where(self._sessions, sessions_table.c.status == SessionStatus.WAITLISTED.value)
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


def _state_values(session: Session) -> dict[str, Any]:
    """The SESSION_STATE_FIELDS of a session's row."""
    return {
        "status": session.status.value,
        "queue_seq": session.queue_seq,
        "passed_over": session.passed_over,
        "room_id": session.room_id,
        "assigned_at": session.assigned_at,
        "ended_at": session.ended_at,
        "last_event_at": session.last_event_at,
    }


def _session_values(session: Session) -> dict[str, Any]:
    """The SESSION_FIELDS of a session's row."""
    p = session.prediction
    return _state_values(session) | {
        "item_ids": list(session.item_ids),
        "needs_accessible": session.needs_accessible,
        "arrived_at": session.arrived_at,
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
