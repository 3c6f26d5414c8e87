"""HTTP API of the smart fitting-room service: thin routes wired to the domain in `fitting_room`.

Run with `uvicorn api:app`. Settings come from FITTING_ROOM_* environment variables.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from fitting_room import __version__, presenters
from fitting_room.catalog import Catalog
from fitting_room.engine import Rules
from fitting_room.errors import (
    ConflictError,
    FittingRoomError,
    InvalidRequestError,
    NotFoundError,
)
from fitting_room.rooms import load_rooms
from fitting_room.schemas import (
    AlertResponse,
    AlertsResponse,
    AssignRoomRequest,
    AssignRoomResponse,
    DetectAnomalyRequest,
    DetectAnomalyResponse,
    ErrorResponse,
    PredictDurationRequest,
    PredictDurationResponse,
    ResolveAlertRequest,
    RoomsStatusResponse,
    SessionResponse,
    WelcomeResponse,
)
from fitting_room.service import ExitReport, FittingRoomService
from fitting_room.settings import Settings
from fitting_room.store import Store
from models import AnomalyDetector, DurationPredictor

logger = logging.getLogger("fitting_room.api")

ERROR_STATUS: dict[type[FittingRoomError], int] = {
    InvalidRequestError: 422,
    NotFoundError: 404,
    ConflictError: 409,
}
ERRORS = {
    404: {"model": ErrorResponse, "description": "Unknown room or session."},
    409: {"model": ErrorResponse, "description": "The request contradicts the current state."},
    422: {"description": "Invalid input; nothing was changed."},
}


@dataclass(frozen=True)
class AppState:
    """What the lifespan opens and every request shares."""

    settings: Settings
    service: FittingRoomService


def open_service(settings: Settings) -> FittingRoomService:
    """Open the store, sync the rooms file and load the catalog and verified models."""
    catalog = Catalog.load(settings.data_dir / "item_database.json")
    predictor = DurationPredictor.load(settings.model_dir / "duration_model.pkl")
    detector = AnomalyDetector.load(settings.model_dir / "anomaly_model.pkl")
    store = Store(settings.database_url)
    store.create_schema()
    rules = Rules(policy=settings.policy, max_passes=settings.max_passes)
    with store.write() as tx:
        kept = tx.sync_rooms(load_rooms(settings.rooms_file))
    if kept:
        logger.warning("rooms %s are no longer configured but occupied; kept until released", kept)
    return FittingRoomService(store, rules, catalog, predictor, detector)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application; `settings` defaults to the environment."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or Settings()
        service = open_service(resolved)
        app.state.ctx = AppState(settings=resolved, service=service)
        try:
            yield
        finally:
            service.store.close()

    app = FastAPI(
        title="Smart Fitting Room",
        version=__version__,
        description="Assigns fitting rooms, keeps a durable waitlist, predicts session length and "
        "checks exits for missing items, tag swaps and overstays.",
        lifespan=lifespan,
    )
    app.add_exception_handler(FittingRoomError, _domain_error)  # type: ignore[arg-type]
    _add_routes(app)
    return app


async def _domain_error(_request: Request, exc: FittingRoomError) -> JSONResponse:
    status = next((code for cls, code in ERROR_STATUS.items() if isinstance(exc, cls)), 500)
    return JSONResponse(status_code=status, content={"detail": str(exc)})


def get_state(request: Request) -> AppState:
    """The lifespan's shared state."""
    ctx: AppState = request.app.state.ctx
    return ctx


State = Annotated[AppState, Depends(get_state)]


def event_time(value: datetime | None, settings: Settings) -> datetime:
    """The event's time: as given (naive means store-local), else the server's clock."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=settings.zone)
    return value


def _add_routes(app: FastAPI) -> None:
    @app.get("/", response_model=WelcomeResponse, summary="Welcome")
    def root() -> WelcomeResponse:
        return WelcomeResponse(
            message="Smart Fitting Room service", version=__version__, docs="/docs", openapi="/openapi.json"
        )

    @app.post("/predict_duration", response_model=PredictDurationResponse, responses=ERRORS)
    def predict_duration(body: PredictDurationRequest, state: State) -> PredictDurationResponse:
        """Predict how long a session with these items will take."""
        entry = event_time(body.entry_time, state.settings)
        return presenters.prediction_response(state.service.predict(body.item_ids, entry, body.level))

    @app.post("/assign_room", response_model=AssignRoomResponse, responses=ERRORS)
    def assign_room(body: AssignRoomRequest, state: State) -> AssignRoomResponse:
        """Assign the best free room, or a durable place on the waitlist."""
        now = event_time(body.timestamp, state.settings)
        return presenters.assignment_response(state.service.assign(body.item_ids, body.accessible, now))

    @app.get("/rooms/status", response_model=RoomsStatusResponse)
    def rooms_status(
        state: State,
        at: Annotated[datetime | None, Query(description="Project estimates as of this time.")] = None,
    ) -> RoomsStatusResponse:
        """Every room and the waitlist with live estimates."""
        return presenters.floor_response(state.service.floor_status(event_time(at, state.settings)))

    @app.get("/sessions/{session_id}", response_model=SessionResponse, responses=ERRORS)
    def get_session(
        session_id: str,
        state: State,
        at: Annotated[datetime | None, Query(description="Project estimates as of this time.")] = None,
    ) -> SessionResponse:
        """A session: status, room, or position and estimated wait while waiting."""
        view = state.service.session(session_id, event_time(at, state.settings))
        return presenters.session_response(view)

    @app.post("/sessions/{session_id}/cancel", response_model=SessionResponse, responses=ERRORS)
    def cancel_session(session_id: str, state: State) -> SessionResponse:
        """A waiting customer leaves the line; positions behind close up."""
        now = event_time(None, state.settings)
        return presenters.session_response(state.service.cancel(session_id, now))

    @app.post("/detect_anomaly", response_model=DetectAnomalyResponse, responses=ERRORS)
    def detect_anomaly(body: DetectAnomalyRequest, state: State) -> DetectAnomalyResponse:
        """Check a finished session; for the session in that room, complete it and free the room."""
        settings = state.settings
        report = ExitReport(
            session_id=body.session_id,
            room_id=body.room_id,
            exit_scans=body.exit_scans,
            entry_scans=body.entry_scans,
            entry_time=event_time(body.entry_time, settings) if body.entry_time else None,
            exit_time=event_time(body.exit_time, settings) if body.exit_time else None,
            actual_duration=body.actual_duration,
            predicted_duration=body.predicted_duration,
        )
        result = state.service.check_exit(report, event_time(None, settings))
        return presenters.exit_response(result)

    @app.get("/alerts", response_model=AlertsResponse)
    def list_alerts(
        state: State,
        status: Annotated[str | None, Query(pattern="^(open|resolved)$", description="Filter.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Most alerts returned.")] = 100,
    ) -> AlertsResponse:
        """Alerts for staff, open ones first."""
        alerts = state.service.list_alerts(status, limit)
        return AlertsResponse(alerts=[presenters.alert_response(a) for a in alerts])

    @app.post("/alerts/{alert_id}/resolve", response_model=AlertResponse, responses=ERRORS)
    def resolve_alert(alert_id: int, body: ResolveAlertRequest, state: State) -> AlertResponse:
        """Record what staff found; the outcome becomes a training label."""
        now = event_time(None, state.settings)
        alert = state.service.resolve_alert(alert_id, body.outcome, body.note, now)
        return presenters.alert_response(alert)


app = create_app()
