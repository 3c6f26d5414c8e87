"""Wake-ups for live event streams: a doorbell rung when a change commits, here or on another replica.

Streams still read what changed from the store's event log (the single source of truth); the doorbell only
tells them when to look, so a stream answers within milliseconds instead of at its next poll. On PostgreSQL every
committed event also sends NOTIFY, and a listener thread per process rings the doorbell for changes committed
by other replicas.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import anyio
import psycopg
from sqlalchemy.engine import make_url

logger = logging.getLogger("fitting_room.notify")

CHANNEL = "fitting_room_events"
# How long the listener blocks before it checks whether it should stop.
LISTEN_TICK_SECONDS = 0.5
RECONNECT_SECONDS = 1.0


class Doorbell:
    """Async waiters woken from any thread."""

    def __init__(self) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._guard = threading.Lock()
        self._rings = 0

    @property
    def rings(self) -> int:
        """How often the bell has rung: read it before looking at the log, pass it to `wait`."""
        return self._rings

    def ring(self) -> None:
        """Wake every waiter (safe from any thread)."""
        with self._guard:
            self._rings += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float, seen: int) -> bool:
        """Wait until the bell rings after `seen` rings, or `timeout` seconds pass; True when it rang.

        A ring between reading `rings` and calling this is not lost: it returns at once.
        """
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._guard:
            if self._rings != seen:
                return True
            self._waiters.add(waiter)
        try:
            with anyio.move_on_after(timeout):
                await waiter[1].wait()
                return True
            return False
        finally:
            with self._guard:
                self._waiters.discard(waiter)


def libpq_dsn(sqlalchemy_url: str) -> str:
    """The psycopg connection string of a SQLAlchemy PostgreSQL URL."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresListener:
    """A thread that LISTENs for committed events of any replica and rings the doorbell."""

    def __init__(self, url: str, bell: Doorbell) -> None:
        self._dsn = libpq_dsn(url)
        self._bell = bell
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once LISTEN is in place (or after `timeout`, logging why not)."""
        self._thread.start()
        if not self._listening.wait(timeout):
            logger.warning("event listener not connected yet; live streams fall back to polling")

    def stop(self) -> None:
        """Stop the thread (within one listen tick)."""
        self._stop.set()
        self._thread.join(timeout=LISTEN_TICK_SECONDS * 4)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    # A change may have committed while we were not listening: let streams look once.
                    self._bell.ring()
                    self._listening.set()
                    while not self._stop.is_set():
                        for _notice in conn.notifies(timeout=LISTEN_TICK_SECONDS, stop_after=1):
                            self._bell.ring()
            except psycopg.Error as err:
                logger.warning("event listener lost its connection (%s); reconnecting", err)
                self._stop.wait(RECONNECT_SECONDS)
