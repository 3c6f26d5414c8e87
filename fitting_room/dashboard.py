"""The staff dashboard: the page and its assets, a live event stream and today's numbers.

`GET /dashboard` serves one static page (no build step, no CDN: store networks are often offline). The page
reads the public API (`/rooms/status`, `/alerts`, `/sessions/{id}`) plus `GET /dashboard/summary`, and
re-reads it whenever `GET /events` reports a committed change.

`GET /events` is a server-sent-event stream tailing the store's event log. The log lives in the database,
so a stream sees changes made by any process or replica. Each event carries its log id as the SSE `id`, so
a reconnecting browser resumes with `Last-Event-ID` and nothing is lost across a server restart. A stream
ends by itself after `stream_seconds` and the browser resumes it at once: a server shutdown (which waits for
open responses) is never held up for long by a tablet left open.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, select

from fitting_room.engine import SessionStatus
from fitting_room.schemas import EventTime
from fitting_room.service import FittingRoomService
from fitting_room.settings import Settings
from fitting_room.store import Event, Transaction
from fitting_room.tables import alerts_table, sessions_table

STATIC_DIR = Path(__file__).resolve().parent / "static"
# Only these files are served: a fixed list, so no request path ever reaches the file system.
ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
NO_CACHE = {"Cache-Control": "no-cache"}

# Streams wake on the store's doorbell; polling only covers a lost database listener.
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0
STREAM_SECONDS = 20.0
# Browsers wait this long before resuming a stream that ended or broke.
RETRY_MILLISECONDS = 500


class StoreContext(Protocol):
    """What the dashboard reads of the caller's store (`api.StoreContext`)."""

    @property
    def settings(self) -> Settings:
        """The service's settings."""
        ...

    @property
    def service(self) -> FittingRoomService:
        """The store's service, whose `store` holds its event log."""
        ...


@dataclass(frozen=True)
class DaySummary:
    """Numbers of one store-local day."""

    day: date
    arrivals: int
    sessions_started: int
    sessions_completed: int
    waits: list[float]
    alerts_raised: int
    alerts_resolved: int

    @property
    def mean_wait(self) -> float | None:
        """Mean minutes from arrival to room over the day's started sessions."""
        return sum(self.waits) / len(self.waits) if self.waits else None

    @property
    def p90_wait(self) -> float | None:
        """90th percentile of those waits (linear interpolation between order statistics)."""
        return quantile(self.waits, 0.9) if self.waits else None


class DashboardSummary(BaseModel):
    """Today's numbers for the staff screen."""

    date: str = Field(description="The store-local day these numbers cover (YYYY-MM-DD).", examples=["2026-12-04"])
    timezone: str = Field(description="The store's IANA time zone; the page shows times in it.", examples=["UTC"])
    arrivals: int = Field(description="Customers who arrived at the kiosk that day.", examples=[57])
    sessions_started: int = Field(description="Sessions that entered a room that day.", examples=[52])
    sessions_completed: int = Field(description="Sessions that left their room that day.", examples=[49])
    mean_wait: float | None = Field(
        description="Mean minutes from arrival to entering a room, over the sessions started that day; "
        "null when none started.",
        examples=[1.8],
    )
    p90_wait: float | None = Field(
        description="90th percentile of those waits, minutes; null when none started.", examples=[6.5]
    )
    alerts_raised: int = Field(description="Alerts raised that day.", examples=[3])
    alerts_resolved: int = Field(description="Alerts staff resolved that day.", examples=[2])


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile of non-empty `values`, interpolating linearly between order statistics."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """Start and end (exclusive) of a store-local day, as aware datetimes; DST days are 23 or 25 hours."""
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def day_summary(tx: Transaction, day: date, zone: ZoneInfo) -> DaySummary:
    """Sessions, waits and alerts of one store-local day, read in one transaction."""
    start, end = day_bounds(day, zone)
    s, a = sessions_table.c, alerts_table.c

    def within(column: Any) -> ColumnElement[bool]:
        return and_(column >= start, column < end)

    def count(*conditions: ColumnElement[bool], table: Any = sessions_table) -> int:
        return int(tx.conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar_one())

    ours, our_alerts = s.store_id == tx.store_id, a.store_id == tx.store_id
    started = tx.conn.execute(select(s.arrived_at, s.assigned_at).where(ours, within(s.assigned_at))).all()
    waits = [max((assigned - arrived).total_seconds() / 60.0, 0.0) for arrived, assigned in started]
    return DaySummary(
        day=day,
        arrivals=count(ours, within(s.arrived_at)),
        sessions_started=len(started),
        sessions_completed=count(ours, s.status == SessionStatus.COMPLETED.value, within(s.ended_at)),
        waits=waits,
        alerts_raised=count(our_alerts, within(a.raised_at), table=alerts_table),
        alerts_resolved=count(our_alerts, within(a.resolved_at), table=alerts_table),
    )


def summary_response(summary: DaySummary, zone: ZoneInfo) -> DashboardSummary:
    """Body of GET /dashboard/summary."""
    return DashboardSummary(
        date=summary.day.isoformat(),
        timezone=str(zone),
        arrivals=summary.arrivals,
        sessions_started=summary.sessions_started,
        sessions_completed=summary.sessions_completed,
        mean_wait=_round(summary.mean_wait),
        p90_wait=_round(summary.p90_wait),
        alerts_raised=summary.alerts_raised,
        alerts_resolved=summary.alerts_resolved,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def sse_message(
    data: dict[str, Any], event_id: int | None = None, event: str | None = None, retry: int | None = None
) -> str:
    """One server-sent event in wire format."""
    lines = []
    if retry is not None:
        lines.append(f"retry: {retry}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), sort_keys=True))
    return "\n".join(lines) + "\n\n"


def parse_last_event_id(value: str | None) -> int | None:
    """The numeric Last-Event-ID a browser resumes from; None when absent or not ours."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _as_of(at: datetime | None, zone: ZoneInfo, clock: Callable[[], datetime]) -> datetime:
    if at is None:
        return clock()
    return at if at.tzinfo is not None else at.replace(tzinfo=zone)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def dashboard_router(
    *,
    poll_seconds: float = POLL_SECONDS,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
    stream_seconds: float = STREAM_SECONDS,
    clock: Callable[[], datetime] = _utc_now,
    context: Any,
) -> APIRouter:
    """Routes of the staff dashboard: the page, its assets, `/events` and `/dashboard/summary`.

    `context` is the dependency that checks the caller's key and gives its store (a `StoreContext`); it guards
    the two data routes. The page and its assets stay open because the page itself asks for the key.
    """
    router = APIRouter(tags=["dashboard"])

    @router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_page() -> FileResponse:
        """The staff dashboard page."""
        return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html", headers=NO_CACHE)

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    def dashboard_asset(name: str) -> FileResponse:
        """A stylesheet or script of the page."""
        media_type = ASSETS.get(name)
        if media_type is None:
            raise HTTPException(status_code=404, detail=f"no dashboard asset {name!r}")
        return FileResponse(STATIC_DIR / name, media_type=media_type, headers=NO_CACHE)

    @router.get("/dashboard/summary", response_model=DashboardSummary)
    def dashboard_summary(
        at: Annotated[
            EventTime | None,
            Query(
                description="A moment of the day to summarise (without an offset: store-local; years 2000-2100). "
                "Default: now."
            ),
        ] = None,
        ctx: StoreContext = context,
    ) -> DashboardSummary:
        """Today's numbers: arrivals, sessions, mean and p90 wait, alerts raised and resolved."""
        zone = ctx.settings.zone
        day = _as_of(at, zone, clock).astimezone(zone).date()
        with ctx.service.store.read() as tx:
            summary = day_summary(tx, day, zone)
        return summary_response(summary, zone)

    @router.get(
        "/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "A `text/event-stream`. First a `ready` event whose `id` is the newest log "
                "id, then one unnamed event per committed change, `data` being "
                '`{"event_id", "kind", "payload"}` with kind one of session_waitlisted, session_assigned, '
                "session_completed, session_cancelled, alert_raised, alert_resolved. A comment line "
                f"every {heartbeat_seconds:g} s keeps proxies from closing an idle stream; the stream ends "
                f"after {stream_seconds:g} s and browsers resume it with Last-Event-ID.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "api_key",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "The staff API key, for clients that cannot send X-API-Key (a browser's "
                    "EventSource cannot set headers). Every other route takes the header.",
                }
            ]
        },
    )
    async def events(
        request: Request,
        ctx: StoreContext = context,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                description="Resume after this event id (browsers send it when they reconnect).",
            ),
        ] = None,
    ) -> StreamingResponse:
        """Live changes of the store as server-sent events, resumable with Last-Event-ID."""
        store = ctx.service.store

        def newest() -> int:
            with store.read() as tx:
                return tx.last_event_id()

        def after(event_id: int) -> list[Event]:
            with store.read() as tx:
                return tx.events_after(event_id)

        bell = store.database.bell
        seen = bell.rings  # read before the log: a change committed after this wakes the first wait
        current = await anyio.to_thread.run_sync(newest)
        resume = parse_last_event_id(last_event_id)
        # An id beyond the log's end means the database was replaced: start afresh, not never.
        start = resume if resume is not None and resume <= current else current

        async def stream() -> AsyncIterator[str]:
            nonlocal seen
            cursor = start
            # The ready event's id is where this stream resumes: a break during the replay below loses nothing.
            yield sse_message({"last_event_id": current}, event_id=start, event="ready", retry=RETRY_MILLISECONDS)
            if cursor < current:
                for item in await anyio.to_thread.run_sync(after, cursor):
                    cursor = item.event_id
                    yield _event_message(item)
            opened = quiet_since = anyio.current_time()
            while anyio.current_time() - opened < stream_seconds:
                # Woken by any committed change (this process, or another replica's NOTIFY); polls otherwise.
                await bell.wait(poll_seconds, seen)
                if await request.is_disconnected():
                    return
                seen = bell.rings
                batch = await anyio.to_thread.run_sync(after, cursor)
                for item in batch:
                    cursor = item.event_id
                    yield _event_message(item)
                now = anyio.current_time()
                if batch:
                    quiet_since = now
                elif now - quiet_since >= heartbeat_seconds:
                    quiet_since = now
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            # Proxies must neither buffer nor cache a live stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


def _event_message(item: Event) -> str:
    return sse_message({"event_id": item.event_id, "kind": item.kind, "payload": item.payload}, event_id=item.event_id)
