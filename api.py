"""HTTP API of the smart fitting-room service: thin routes wired to the domain in `fitting_room`.

Run with `uvicorn api:app`. Settings come from FITTING_ROOM_* environment variables.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, APIKeyQuery
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from fitting_room import __version__, presenters
from fitting_room.auth import KeyRing, Role, authorize
from fitting_room.catalog import Catalog
from fitting_room.change_queue import ChangeQueue
from fitting_room.dashboard import dashboard_router
from fitting_room.engine import RoomSpec, Rules
from fitting_room.errors import (
    AuthenticationError,
    ConflictError,
    DataContractError,
    FittingRoomError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from fitting_room.idempotency import fingerprint, run_once
from fitting_room.manifest import ANOMALY_MODEL, DURATION_MODEL, read_manifest, verify_artifact
from fitting_room.metrics import CONTENT_TYPE, Metrics
from fitting_room.middleware import BodySizeLimitMiddleware, RequestContextMiddleware, configure_logging
from fitting_room.rooms import DEFAULT_STORE, load_store_rooms, parse_rooms
from fitting_room.schemas import (
    AlertResponse,
    AlertsResponse,
    AssignRoomRequest,
    AssignRoomResponse,
    DetectAnomalyRequest,
    DetectAnomalyResponse,
    ErrorResponse,
    EventTime,
    HealthResponse,
    LoadedModelsResponse,
    PredictDurationRequest,
    PredictDurationResponse,
    ReadinessResponse,
    ResolveAlertRequest,
    RoomsConfigRequest,
    RoomsConfigResponse,
    RoomsStatusResponse,
    SessionResponse,
    WelcomeResponse,
)
from fitting_room.self_validation import (
    IDEMPOTENCY_PARAMETER,
    Endpoint,
    SelfValidatedRoute,
    add_body_schemas,
    idempotency_key,
    json_body,
    self_validated,
)
from fitting_room.service import ExitReport, FittingRoomService, FloorView
from fitting_room.settings import Settings
from fitting_room.store import Database, StoreBusyError
from models import AnomalyDetector, DurationPredictor

logger = logging.getLogger("fitting_room.api")
T = TypeVar("T")
B = TypeVar("B", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)

ERROR_STATUS: dict[type[FittingRoomError], int] = {
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    InvalidRequestError: 422,
    DataContractError: 422,
    ServiceUnavailableError: 503,
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or unknown API key."},
    403: {"model": ErrorResponse, "description": "The key's role may not call this endpoint."},
    404: {"model": ErrorResponse, "description": "Unknown room or session."},
    409: {"model": ErrorResponse, "description": "The request contradicts the current state."},
    413: {"model": ErrorResponse, "description": "Request body over 64 KiB."},
    422: {"description": "Invalid input; nothing was changed."},
    503: {"model": ErrorResponse, "description": "Models not verified and loaded."},
}
api_key_query = APIKeyQuery(
    name="api_key",
    auto_error=False,
    description="API key for the live event stream only: a browser's EventSource cannot send headers.",
)
api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key; its role (kiosk, staff, admin) decides what it may call."
)


# Bodies that the per-request hot routes validate themselves (see `json_body`); the OpenAPI document still
# describes them.
SELF_VALIDATED_BODIES: tuple[type[BaseModel], ...] = (PredictDurationRequest, AssignRoomRequest, DetectAnomalyRequest)


class UnavailableModel:
    """Stands in for a model that failed verification: every use answers 503 with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        """Answer any use of the model with 503 and the reason it is not loaded."""
        raise ServiceUnavailableError(f"models are not loaded: {self.reason}")

    # What the service calls on the duration model (estimate, interval) and on the anomaly model (analyse).
    estimate = interval = analyse = refuse


@dataclass
class ModelStatus:
    """Which verified artifacts are loaded, or why none are."""

    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    inference: str | None = None  # "native" when both models score on the compiled tree walk, else "numpy"

    def versions(self) -> list[tuple[str, str]]:
        """(artifact, SHA-256 prefix) of every loaded artifact."""
        artifacts = self.manifest.get("artifacts", {})
        return [(name, entry["sha256"][:12]) for name, entry in sorted(artifacts.items())]


@dataclass
class StoreContext:
    """One store of the chain as its requests see it: its service and the models that service uses."""

    store_id: str
    settings: Settings
    service: FittingRoomService
    models: ModelStatus
    # The store's state changes: in arrival order on a thread of their own, queued ones committed together.
    changes: ChangeQueue
    # The last status body served and the view it was made from: polls of an unchanged view get the same bytes.
    status_body: tuple[FloorView, bytes] | None = None


@dataclass
class AppState:
    """What the lifespan opens and every request shares."""

    settings: Settings
    database: Database
    stores: dict[str, StoreContext]
    keyring: KeyRing | None
    metrics: Metrics

    def waitlist_length(self) -> int:
        """Customers waiting across every store of this service."""
        return sum(ctx.service.waitlist_length() for ctx in self.stores.values())


def load_models(model_dir: Path) -> tuple[DurationPredictor, AnomalyDetector, dict[str, Any]]:
    """Verify every artifact against the manifest, then unpickle; nothing unverified is ever loaded."""
    manifest = read_manifest(model_dir)
    duration_path = verify_artifact(model_dir, DURATION_MODEL, manifest)
    anomaly_path = verify_artifact(model_dir, ANOMALY_MODEL, manifest)
    return DurationPredictor.load(duration_path), AnomalyDetector.load(anomaly_path), manifest


def served_stores(rooms: dict[str, list[RoomSpec]], keyring: KeyRing | None) -> list[str]:
    """Stores this service opens: every store of the rooms file; each key's store must be among them."""
    needed = keyring.stores if keyring is not None else {DEFAULT_STORE}
    missing = sorted(needed - rooms.keys())
    if missing:
        why = "API keys belong to" if keyring is not None else "without API keys the service serves"
        raise DataContractError(f"{why} store(s) {', '.join(missing)} with no rooms in the rooms file")
    return sorted(rooms)


def open_state(settings: Settings, metrics: Metrics) -> AppState:
    """Migrate the database, sync each store's rooms, load keys, the catalog and the verified models."""
    keyring = KeyRing.load(settings.api_keys_file) if settings.api_keys_file else None
    if keyring is None:
        logger.warning("authentication is off: set FITTING_ROOM_API_KEYS_FILE to require API keys")
    catalog = Catalog.load(settings.data_dir / "item_database.json")
    rooms = load_store_rooms(settings.rooms_file)
    database = Database(settings.database_url)
    database.migrate()
    database.listen()
    rules = Rules(policy=settings.policy, max_passes=settings.max_passes, express_aging=settings.express_aging or None)
    stores: dict[str, StoreContext] = {}
    for store_id in served_stores(rooms, keyring):
        store = database.store(store_id)
        store.ensure_store_row()
        service = FittingRoomService(store, rules, catalog, UnavailableModel("loading"), UnavailableModel("loading"))
        kept = service.configure_rooms(rooms[store_id], datetime.now(UTC))
        if kept:
            logger.warning(
                "store %s: rooms %s are no longer configured but occupied; kept until released", store_id, kept
            )
        stores[store_id] = StoreContext(store_id, settings, service, ModelStatus(error="loading"), ChangeQueue(store))
    state = AppState(settings, database, stores, keyring, metrics)
    load_all_models(state)
    metrics.watch_waitlist(state.waitlist_length)
    return state


def settle_heap() -> None:
    """Collect, then hide everything alive from the cyclic collector (`gc.freeze`) until the app stops.

    The models, catalog and imports are ~220,000 tracked objects that live as long as the process. Every full
    collection walked them all, ~80 ms holding the GIL, and under load those collections set the p99 of every
    route (assign-and-release cycle: p99 72-84 ms with them, 21-24 ms without). Only objects made after this
    call are scanned from then on. Frozen objects are still freed when their last reference goes: models a
    reload replaces hold no reference cycles, so they go as soon as no request uses them.
    """
    gc.collect()
    gc.freeze()


def model_dir_for(settings: Settings, store_id: str) -> Path:
    """Where a store's models live: its own folder under model_dir when models are per store."""
    return settings.model_dir / store_id if settings.models_per_store else settings.model_dir


def load_all_models(state: AppState) -> None:
    """Load verified models for every store (once when they are shared); a failure is kept and reported."""
    # The first store using a model folder loads it; the others share what it loaded.
    owners: dict[Path, StoreContext] = {}
    for ctx in state.stores.values():
        folder = model_dir_for(state.settings, ctx.store_id)
        owner = owners.setdefault(folder, ctx)
        if owner is ctx:
            ctx.models = swap_models(ctx.service, folder)
        else:
            ctx.service.predictor, ctx.service.detector = owner.service.predictor, owner.service.detector
            ctx.models = owner.models
    versions = {pair for owner in owners.values() for pair in owner.models.versions()}
    state.metrics.set_models(sorted(versions))


def swap_models(service: FittingRoomService, model_dir: Path) -> ModelStatus:
    """Load verified models and put them in service; on failure keep serving without them and say why."""
    try:
        predictor, detector, manifest = load_models(model_dir)
    except (ModelLoadError, DataContractError, OSError) as err:
        logger.error("models not loaded from %s: %s", model_dir, err)
        service.predictor = service.detector = UnavailableModel(str(err))
        return ModelStatus(error=str(err))
    service.predictor, service.detector = predictor, detector
    inference = "native" if {predictor.inference, detector.inference} == {"native"} else "numpy"
    return ModelStatus(manifest=manifest, inference=inference)


class FittingRoomAPI(FastAPI):
    """FastAPI whose OpenAPI document also describes the request bodies that hot routes validate themselves."""

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document, with the self-validated bodies among its component schemas."""
        if self.openapi_schema is None:
            add_body_schemas(super().openapi(), SELF_VALIDATED_BODIES)
        return self.openapi_schema  # type: ignore[return-value]  # set by super().openapi()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The FastAPI application; `settings` defaults to the environment."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        # One row per request: OpenMP's thread start-up costs more than the work it would split.
        threadpool_limits(limits=1)
        state = open_state(settings or Settings(), metrics)
        app.state.ctx = state
        settle_heap()
        try:
            yield
        finally:
            for store in state.stores.values():
                store.changes.shutdown()  # changes already accepted finish and commit
            state.database.close()
            gc.unfreeze()  # what this app loaded may be collected again

    app = FittingRoomAPI(
        title="Smart Fitting Room",
        version=__version__,
        description="Assigns fitting rooms, keeps a durable waitlist, predicts session length and "
        "checks exits for missing items, tag swaps and overstays.",
        lifespan=lifespan,
    )
    app.add_exception_handler(FittingRoomError, _domain_error)  # type: ignore[arg-type]
    app.add_middleware(BodySizeLimitMiddleware)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    _add_routes(app)
    app.include_router(dashboard_router(context=store_access(Role.STAFF, "watch the dashboard", from_query=True)))
    return app


async def _domain_error(_request: Request, exc: FittingRoomError) -> JSONResponse:
    status = next((code for cls, code in ERROR_STATUS.items() if isinstance(exc, cls)), 500)
    headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
    return JSONResponse(status_code=status, content={"detail": str(exc)}, headers=headers)


async def get_state(request: Request) -> AppState:
    """The lifespan's shared state."""
    # Dependencies without I/O are async: a sync one would cost every request a thread-pool hop.
    ctx: AppState = request.app.state.ctx
    return ctx


State = Annotated[AppState, Depends(get_state)]
SessionId = Annotated[str, PathParam(min_length=1, max_length=64, description="Session id.")]
At = Annotated[EventTime | None, Query(description="Project estimates as of this time (ISO 8601, years 2000-2100).")]


def caller_store(request: Request, role: Role, action: str) -> StoreContext:
    """The store of the request's X-API-Key, which must have at least `role`: `store_access` without its solving.

    Routes that use it declare the key in their OpenAPI operation through `self_validation.self_validated`.
    """
    return _caller_store(request.app.state.ctx, request.headers.get(api_key_header.model.name), role, action)


def post_self_validated(
    app: FastAPI, path: str, response: type[BaseModel], body: type[BaseModel], *, idempotent: bool = False
) -> Callable[[Endpoint], Endpoint]:
    """`app.post` for a SelfValidatedRoute (key and body checked by the endpoint), documented as a declared one."""
    extra = self_validated(body, api_key_header.scheme_name, idempotent=idempotent)

    def register(endpoint: Endpoint) -> Endpoint:
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=response,
            responses=ERRORS,
            openapi_extra=extra,
            route_class_override=SelfValidatedRoute,
        )
        return endpoint

    return register


async def change_request(
    request: Request, role: Role, action: str, model: type[B]
) -> tuple[StoreContext, str | None, B]:
    """The caller's store (its key checked for `role`), the Idempotency-Key and the body of a change route."""
    store = caller_store(request, role, action)
    key = idempotency_key(request)
    return store, key, await json_body(request, model)


def _caller_store(state: AppState, key: str | None, role: Role, action: str) -> StoreContext:
    if state.keyring is None:
        return state.stores[DEFAULT_STORE]
    found, store_id = state.keyring.identify(key)
    authorize(found, role, action)
    return state.stores[store_id]


def store_access(role: Role, action: str, *, from_query: bool = False) -> Any:
    """Dependency: the store of the caller's key, which must have at least `role` (no keys: the default store).

    `from_query` also accepts the key as ?api_key= (a browser's EventSource cannot send headers).
    """
    if from_query:

        async def check_stream(
            request: Request,
            header: Annotated[str | None, Security(api_key_header)],
            query: Annotated[str | None, Security(api_key_query)],
        ) -> StoreContext:
            return _caller_store(request.app.state.ctx, header or query, role, action)

        return Depends(check_stream)

    # The request, not the State dependency: one level less of dependency solving on every kiosk call.
    async def check(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> StoreContext:
        return _caller_store(request.app.state.ctx, key, role, action)

    return Depends(check)


KIOSK_ACTION = "use the kiosk endpoints"
STAFF_ACTION = "use staff endpoints"
Kiosk = Annotated[StoreContext, store_access(Role.KIOSK, KIOSK_ACTION)]
Staff = Annotated[StoreContext, store_access(Role.STAFF, STAFF_ACTION)]
Admin = Annotated[StoreContext, store_access(Role.ADMIN, "administer the service")]


def event_time(value: datetime | None, settings: Settings) -> datetime:
    """The event's time: as given (naive means store-local), else the server's clock."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=settings.zone)
    return value


def projection_time(value: datetime | None, settings: Settings) -> datetime:
    """When estimates are projected to: as given, else the server's clock to the second.

    Whole seconds let every kiosk and tablet polling within one second share one projection of the floor.
    """
    return event_time(value, settings) if value is not None else datetime.now(UTC).replace(microsecond=0)


async def read_without_stalling(
    store: StoreContext, read: Callable[..., T], *args: Any, wait_for_changes: bool = True
) -> T:
    """Run a read of the store's floor on the event loop when that cannot block, else in a worker thread.

    Inline saves the thread hop (most of such a request's cost), but only while no writer of this process holds the
    floor, the database is a local SQLite file and nothing long is due (a wait projection not yet kept for this
    moment): the loop must never wait on a commit, a network round trip or seconds of projection, or every
    request, /healthz included, would wait with it. Without `wait_for_changes`, a floor held by a change raises
    StoreBusyError instead of waiting for it in a thread.
    """
    if not store.service.store.database.is_postgresql:
        try:
            return read(*args, wait=False)
        except StoreBusyError:
            if not wait_for_changes:
                raise
    return await anyio.to_thread.run_sync(partial(read, *args, wait=True))


def json_response(body: BaseModel) -> Response:
    """A response model serialised once, as it is: FastAPI would dump it and validate the dump again.

    Routes keep `response_model` for the docs; the schemathesis tests check every answer against it.
    """
    return Response(body.model_dump_json(), media_type="application/json")


def once(
    ctx: StoreContext, key: str | None, request: Request, body: BaseModel | None, action: Callable[[], M]
) -> tuple[Response, M | None]:
    """Run a state change once per Idempotency-Key, storing its response in the same transaction.

    Returns the response and, when the change ran now (not a replay), its model for the caller's metrics.
    """
    if key is None:
        made = action()
        return json_response(made), made
    canonical = body.model_dump_json() if body is not None else ""
    ran: list[M] = []

    def run() -> dict[str, Any]:
        ran.append(action())
        return ran[-1].model_dump(mode="json")

    stored, replayed = run_once(
        ctx.service.store, key, fingerprint(request.method, request.url.path, canonical), datetime.now(UTC), run
    )
    answer = JSONResponse(stored, headers={"Idempotent-Replayed": "true" if replayed else "false"})
    return answer, None if replayed else ran[-1]


def _add_routes(app: FastAPI) -> None:
    # Starlette tries routes in order: the kiosk's and gates' per-customer calls come right after the welcome.
    @app.get("/", response_model=WelcomeResponse, summary="Welcome")
    async def root(state: State) -> WelcomeResponse:
        return WelcomeResponse(
            message="Smart Fitting Room service",
            version=__version__,
            docs="/docs",
            openapi="/openapi.json",
            authentication="on" if state.keyring is not None else "off",
        )

    @post_self_validated(app, "/predict_duration", PredictDurationResponse, PredictDurationRequest)
    async def predict_duration(request: Request) -> Response:
        """Predict how long a session with these items will take."""
        store = caller_store(request, Role.KIOSK, KIOSK_ACTION)
        body = await json_body(request, PredictDurationRequest)
        # ~0.1 ms of CPU and no I/O: cheaper on the event loop than a hop to the thread pool.
        entry = event_time(body.entry_time, store.settings)
        return json_response(
            presenters.prediction_response(store.service.predict_interval(body.item_ids, entry, body.level))
        )

    @post_self_validated(app, "/assign_room", AssignRoomResponse, AssignRoomRequest, idempotent=True)
    async def assign_room(request: Request) -> Response:
        """Assign the best free room, or a durable place on the waitlist."""
        store, key, body = await change_request(request, Role.KIOSK, KIOSK_ACTION, AssignRoomRequest)
        metrics = request.app.state.ctx.metrics

        def act() -> AssignRoomResponse:
            now = event_time(body.timestamp, store.settings)
            view = store.service.assign(body.item_ids, body.accessible, now, server_clock=body.timestamp is None)
            return presenters.assignment_response(view)

        # Counted once the change has committed: a change of a failed group runs twice, its count must not.
        answer, made = await store.changes.run(once, store, key, request, body, act)
        if made is not None:
            metrics.assignments.labels(outcome=made.status).inc()
        return answer

    @app.get("/rooms/status", response_model=RoomsStatusResponse, responses=ERRORS)
    async def rooms_status(store: Kiosk, at: At = None) -> Response:
        """Every room of the caller's store and its waitlist with live estimates."""
        view = await read_without_stalling(store, store.service.floor_status, projection_time(at, store.settings))
        served = store.status_body
        if served is None or served[0] is not view:
            served = store.status_body = (view, presenters.floor_response(view).model_dump_json().encode())
        return Response(served[1], media_type="application/json")

    @app.get("/sessions/{session_id}", response_model=SessionResponse, responses=ERRORS)
    async def get_session(session_id: SessionId, store: Kiosk, at: At = None) -> Response:
        """A session: status, room, or position and estimated wait while waiting."""
        view = await read_without_stalling(
            store, store.service.session, session_id, projection_time(at, store.settings)
        )
        return json_response(presenters.session_response(view))

    @app.post(
        "/sessions/{session_id}/cancel",
        response_model=SessionResponse,
        responses=ERRORS,
        openapi_extra={"parameters": [IDEMPOTENCY_PARAMETER]},
    )
    async def cancel_session(session_id: SessionId, store: Kiosk, request: Request) -> Any:
        """A waiting customer leaves the line; positions behind close up."""
        key = idempotency_key(request)

        def act() -> SessionResponse:
            now = event_time(None, store.settings)
            return presenters.session_response(store.service.cancel(session_id, now))

        answer, _ = await store.changes.run(once, store, key, request, None, act)
        return answer

    @post_self_validated(app, "/detect_anomaly", DetectAnomalyResponse, DetectAnomalyRequest, idempotent=True)
    async def detect_anomaly(request: Request) -> Response:
        """Check a finished session; for the session in that room, complete it and free the room."""
        store, key, body = await change_request(request, Role.STAFF, STAFF_ACTION, DetectAnomalyRequest)
        metrics = request.app.state.ctx.metrics
        settings = store.settings
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

        # Whether the session is on record (then the change thread needs no second look): the floor this process
        # last held answers the releases of customers it seated, without the store's lock or a query.
        known = store.service.seen(report.session_id)

        def act() -> DetectAnomalyResponse:
            check = store.service.complete_exit if known else store.service.check_exit
            return presenters.exit_response(check(report, event_time(None, settings)))

        if key is None and not known:
            # A session the store never saw is only analysed (no commit); one on record is the change thread's.
            now = event_time(None, settings)
            try:
                analysed = await read_without_stalling(
                    store, store.service.analyse_if_unknown, report, now, wait_for_changes=False
                )
            except StoreBusyError:
                pass  # a change holds the floor: the change thread looks after it rather than a thread waiting here
            else:
                if analysed is not None:
                    return json_response(presenters.exit_response(analysed))
                known = True
        answer, made = await store.changes.run(once, store, key, request, body, act)
        if made is not None and made.next_assignment is not None:
            metrics.assignments.labels(outcome="promoted").inc()
        if made is not None and made.alert_id is not None:
            for reason in made.reasons:
                metrics.alerts.labels(reason=reason.code).inc()
        return answer

    @app.get("/alerts", response_model=AlertsResponse, responses=ERRORS)
    def list_alerts(
        store: Staff,
        status: Annotated[str | None, Query(pattern="^(open|resolved)$", description="Filter.")] = None,
        limit: Annotated[int, Query(ge=1, le=500, description="Most alerts returned.")] = 100,
    ) -> AlertsResponse:
        """Alerts for staff, open ones first."""
        alerts = store.service.list_alerts(status, limit)
        return AlertsResponse(alerts=[presenters.alert_response(a) for a in alerts])

    @app.post("/alerts/{alert_id}/resolve", response_model=AlertResponse, responses=ERRORS)
    def resolve_alert(
        alert_id: Annotated[int, PathParam(ge=1, le=2**62, description="Alert id.")],
        body: ResolveAlertRequest,
        store: Staff,
    ) -> AlertResponse:
        """Record what staff found; the outcome becomes a training label."""
        now = event_time(None, store.settings)
        alert = store.service.resolve_alert(alert_id, body.outcome, body.note, now)
        return presenters.alert_response(alert)

    @app.get("/healthz", response_model=HealthResponse, summary="Liveness")
    async def healthz() -> HealthResponse:
        """The process answers."""
        return HealthResponse(status="ok")

    @app.get("/readyz", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}})
    def readyz(state: State) -> Any:
        """Ready when the models are verified and loaded and the database accepts a write."""
        problems = [f"models of {c.store_id}: {c.models.error}" for c in state.stores.values() if c.models.error]
        try:
            for ctx in state.stores.values():
                ctx.service.store.ping()
        except Exception as err:  # any database failure means not ready, whatever its type
            problems.append(f"database: {type(err).__name__}: {err}")
        body = ReadinessResponse(status="ready" if not problems else "not ready", problems=problems)
        return body if not problems else JSONResponse(status_code=503, content=body.model_dump())

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics(state: State) -> Response:
        """Requests, latency, assignments, waitlist length, alerts and model versions."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/models", response_model=LoadedModelsResponse, responses=ERRORS)
    def loaded_models(store: Staff) -> LoadedModelsResponse:
        """What is loaded for the caller's store: versions, training time, data size and headline metrics."""
        return presenters.models_response(store.models.manifest, store.models.error, store.models.inference)

    @app.post("/models/reload", response_model=LoadedModelsResponse, responses=ERRORS)
    def reload_models(store: Admin, state: State) -> LoadedModelsResponse:
        """Verify the artifacts on disk and swap them in without a restart (every store sharing them)."""
        load_all_models(state)
        settle_heap()
        if store.models.error:
            raise ServiceUnavailableError(f"models not loaded: {store.models.error}")
        return presenters.models_response(store.models.manifest, None, store.models.inference)

    @app.put("/rooms", response_model=RoomsConfigResponse, responses=ERRORS)
    def configure_rooms(body: RoomsConfigRequest, store: Admin) -> RoomsConfigResponse:
        """Replace the caller's store's rooms (admin); occupied rooms that are removed stay until released."""
        specs = parse_rooms([room.model_dump() for room in body.rooms], "request body")
        kept = store.service.configure_rooms(specs, event_time(None, store.settings))
        return RoomsConfigResponse(rooms=[spec.room_id for spec in specs], kept_occupied=kept)


app = create_app()
