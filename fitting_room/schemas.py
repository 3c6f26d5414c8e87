"""Request and response bodies of the HTTP API: every field described, bounded and exemplified."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints

MAX_ITEMS_PER_REQUEST = 50

ItemId = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    Field(description="Item id (SKU or RFID tag) as scanned; matched case- and space-insensitively."),
]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
# Timestamps leave the service as ISO 8601 with an explicit offset, never as a bare "Z" or naive time.
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]
Minutes = Annotated[float, Field(ge=0, le=24 * 60)]
EARLIEST_YEAR, LATEST_YEAR = 2000, 2100


def _within_service_years(value: datetime) -> datetime:
    """Refuse timestamps outside 2000-2100: near datetime's limits, offsets and durations would overflow."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise ValueError(f"timestamps must lie in the years {EARLIEST_YEAR}-{LATEST_YEAR}")
    return value


# A timestamp a caller sends (ISO 8601; without an offset it is store-local), in the years 2000-2100.
EventTime = Annotated[datetime, AfterValidator(_within_service_years)]

EXAMPLE_ITEMS = ["sku-0042", "sku-0015"]
EXAMPLE_TIME = "2026-12-04T14:30:00+00:00"
EXAMPLE_SESSION = "3f2b9c4e8d7a4f0e9b1c2d3e4f5a6b7c"


class Interval(BaseModel):
    """A central prediction interval in minutes."""

    low: float = Field(description="Lower bound, minutes.", examples=[7.9])
    high: float = Field(description="Upper bound, minutes.", examples=[21.4])
    level: float = Field(description="Nominal coverage, e.g. 0.9 for a 90% interval.", examples=[0.9])


class WaitInterval(BaseModel):
    """A central interval of a projected wait in minutes."""

    low: float = Field(description="Lower bound, minutes.", examples=[2.5])
    high: float = Field(description="Upper bound, minutes.", examples=[11.0])
    level: float = Field(
        description="Share of projected futures in which the wait falls inside, e.g. 0.8.", examples=[0.8]
    )


class PredictDurationRequest(BaseModel):
    """Items a customer carries in, and when."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[ItemId] = Field(
        min_length=1, max_length=MAX_ITEMS_PER_REQUEST, description="Scanned items.", examples=[EXAMPLE_ITEMS]
    )
    entry_time: EventTime | None = Field(
        None,
        description="Entry time (ISO 8601; without an offset it is store-local). Default: now.",
        examples=[EXAMPLE_TIME],
    )
    level: float = Field(0.9, ge=0.5, le=0.99, description="Coverage of the returned interval.", examples=[0.9])


class PredictDurationResponse(BaseModel):
    """Predicted session length."""

    predicted_duration: float = Field(
        description="Predicted duration in minutes (the conditional median).", examples=[12.6]
    )
    interval: Interval = Field(description="Prediction interval at the requested level.")
    unknown_item_ids: list[str] = Field(
        description="Items not in the item database; predicted as the store's typical item.",
        examples=[[]],
    )


class AssignRoomRequest(BaseModel):
    """A customer arriving at the kiosk."""

    model_config = ConfigDict(extra="forbid")

    item_ids: list[ItemId] = Field(
        min_length=1, max_length=MAX_ITEMS_PER_REQUEST, description="Scanned items.", examples=[EXAMPLE_ITEMS]
    )
    timestamp: EventTime | None = Field(
        None,
        description="The kiosk's scan time (event time, ISO 8601). Default: the server's clock.",
        examples=[EXAMPLE_TIME],
    )
    accessible: bool = Field(False, description="The customer needs an accessible room.", examples=[False])


class AssignRoomResponse(BaseModel):
    """A room, or a durable place in line."""

    status: Literal["assigned", "waitlisted"] = Field(description="Outcome.", examples=["assigned"])
    session_id: str = Field(
        description="The customer's session id, kept when a room is theirs.", examples=[EXAMPLE_SESSION]
    )
    room_id: str | None = Field(description="Assigned room; null while waiting.", examples=["room_1"])
    predicted_duration: float = Field(description="Predicted session length, minutes.", examples=[12.6])
    interval: Interval = Field(description="90% interval of the session length.")
    estimated_wait: float = Field(
        description="Estimated minutes until a room is theirs; 0 when assigned.", examples=[0.0]
    )
    wait_interval: WaitInterval | None = Field(description="80% interval of the wait; null when assigned.")
    position: int | None = Field(description="1-based place in line while waiting, else null.", examples=[None])
    unknown_item_ids: list[str] = Field(description="Items not in the item database.", examples=[[]])


class AnomalyReason(BaseModel):
    """One explained reason for an alert."""

    code: str = Field(description="Machine-readable reason.", examples=["missing_items"])
    message: str = Field(
        description="The reason in words for floor staff.",
        examples=["1 item not scanned out: sku-0015 (€35.50)"],
    )


class Anomaly(BaseModel):
    """The exit check's verdict."""

    is_anomaly: bool = Field(description="Whether staff should look at this session.", examples=[True])
    anomaly_score: float = Field(ge=0, le=1, description="0-1; higher is more suspicious.", examples=[0.93])
    risk_level: Literal["low", "medium", "high"] = Field(description="Score band.", examples=["high"])
    reasons: list[AnomalyReason] = Field(description="Why, most important first.")
    missing_items: list[str] = Field(description="Scanned in, not out.", examples=[["sku-0015"]])
    unexpected_items: list[str] = Field(description="Scanned out, never in.", examples=[[]])


class SessionRef(BaseModel):
    """A session and its room."""

    session_id: str = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    room_id: str = Field(description="Room id.", examples=["room_1"])


class DetectAnomalyRequest(BaseModel):
    """An exit gate's report of a finished session."""

    model_config = ConfigDict(extra="forbid")

    session_id: Identifier = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    room_id: Identifier = Field(description="Room the customer leaves.", examples=["room_1"])
    exit_scans: list[ItemId] = Field(
        max_length=MAX_ITEMS_PER_REQUEST, description="Items read at the exit.", examples=[["sku-0042"]]
    )
    entry_scans: list[ItemId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ITEMS_PER_REQUEST,
        description="Items read at entry; the server's record is used for sessions it knows.",
        examples=[EXAMPLE_ITEMS],
    )
    actual_duration: Minutes | None = Field(None, description="Minutes spent in the room.", examples=[14.2])
    predicted_duration: Minutes | None = Field(
        None, description="Informational: the caller's prediction, minutes.", examples=[12.6]
    )
    entry_time: EventTime | None = Field(None, description="Entry time (ISO 8601).", examples=[EXAMPLE_TIME])
    exit_time: EventTime | None = Field(
        None, description="Exit time (ISO 8601); the event time of the release.", examples=[None]
    )


class DetectAnomalyResponse(Anomaly):
    """The verdict and what the release changed."""

    session_id: str = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    actual_duration: float = Field(description="Minutes the session lasted.", examples=[14.2])
    predicted_duration: float = Field(description="Predicted minutes for this session.", examples=[12.6])
    room_released: bool = Field(description="True when the room was freed by this call.", examples=[True])
    next_assignment: SessionRef | None = Field(description="The waiting customer who got the freed room, if any.")
    alert_id: int | None = Field(description="Alert opened for staff, if flagged.", examples=[None])


class RoomStatus(BaseModel):
    """One room as of `at`."""

    room_id: str = Field(description="Room id.", examples=["room_1"])
    status: Literal["available", "occupied"] = Field(description="Occupancy.", examples=["occupied"])
    max_items: int = Field(description="Most items the room takes.", examples=[8])
    accessible: bool = Field(description="Accessible room.", examples=[False])
    session_id: str | None = Field(description="Occupying session.", examples=[EXAMPLE_SESSION])
    entry_time: Timestamp | None = Field(description="When the occupant entered.", examples=[EXAMPLE_TIME])
    item_count: int | None = Field(description="Items the occupant carried in.", examples=[2])
    predicted_duration: float | None = Field(description="Predicted session minutes.", examples=[12.6])
    predicted_end: Timestamp | None = Field(
        description="entry_time + predicted_duration.", examples=["2026-12-04T14:42:36+00:00"]
    )
    predicted_free_at: Timestamp | None = Field(
        description="Expected free time given the time already spent.", examples=["2026-12-04T14:44:10+00:00"]
    )


class WaitlistEntry(BaseModel):
    """A waiting customer."""

    session_id: str = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    position: int = Field(description="1-based place in line.", examples=[1])
    estimated_wait: float = Field(description="Estimated minutes until a room is theirs.", examples=[4.5])
    wait_interval: WaitInterval = Field(description="80% interval of the wait.")
    arrived_at: Timestamp = Field(description="When they joined the line.", examples=[EXAMPLE_TIME])
    item_count: int = Field(description="Items carried.", examples=[2])
    accessible: bool = Field(description="Needs an accessible room.", examples=[False])
    predicted_duration: float = Field(description="Predicted session minutes.", examples=[12.6])


class RoomsStatusResponse(BaseModel):
    """All rooms and the waitlist."""

    at: Timestamp = Field(description="Moment the estimates are projected for.", examples=[EXAMPLE_TIME])
    rooms: list[RoomStatus] = Field(description="Every configured room.")
    waitlist: list[WaitlistEntry] = Field(description="Waiting customers, position 1 first.")


class SessionResponse(BaseModel):
    """A customer's session."""

    session_id: str = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    status: Literal["waitlisted", "assigned", "completed", "cancelled"] = Field(
        description="Where the session is in its life cycle.", examples=["waitlisted"]
    )
    room_id: str | None = Field(description="Room, once assigned.", examples=[None])
    position: int | None = Field(description="Place in line while waiting.", examples=[2])
    estimated_wait: float | None = Field(description="Minutes until a room, while waiting.", examples=[6.0])
    wait_interval: WaitInterval | None = Field(description="80% interval of the wait, while waiting.")
    item_ids: list[str] = Field(description="Items carried in.", examples=[EXAMPLE_ITEMS])
    accessible: bool = Field(description="Needs an accessible room.", examples=[False])
    arrived_at: Timestamp = Field(description="Arrival at the kiosk.", examples=[EXAMPLE_TIME])
    entry_time: Timestamp | None = Field(description="Entry into the room.", examples=[None])
    ended_at: Timestamp | None = Field(description="Exit or cancellation time.", examples=[None])
    predicted_duration: float = Field(description="Predicted session minutes.", examples=[12.6])
    interval: Interval = Field(description="Interval of the session length.")
    actual_duration: float | None = Field(description="Minutes spent, once completed.", examples=[None])
    exit_scans: list[str] | None = Field(description="Items read at the exit.", examples=[None])
    anomaly: Anomaly | None = Field(description="Exit check result, once completed.")


class ResolveAlertRequest(BaseModel):
    """What staff found."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["theft", "false_alarm", "item_found"] = Field(
        description="Staff outcome; becomes the session's label for training.", examples=["false_alarm"]
    )
    note: Annotated[str, StringConstraints(max_length=500)] | None = Field(
        None, description="Free text for colleagues.", examples=["Item was on the hook in room 2."]
    )


class AlertResponse(BaseModel):
    """A flagged session for staff."""

    alert_id: int = Field(description="Alert id.", examples=[1])
    session_id: str = Field(description="Session id.", examples=[EXAMPLE_SESSION])
    room_id: str = Field(description="Room.", examples=["room_1"])
    raised_at: Timestamp = Field(description="Exit time that raised it.", examples=[EXAMPLE_TIME])
    anomaly_score: float = Field(description="0-1, higher is more suspicious.", examples=[0.93])
    risk_level: str = Field(description="low / medium / high.", examples=["high"])
    reasons: list[AnomalyReason] = Field(description="Why it was raised.")
    missing_items: list[str] = Field(description="Scanned in, not out.", examples=[["sku-0015"]])
    unexpected_items: list[str] = Field(description="Scanned out, never in.", examples=[[]])
    status: Literal["open", "resolved"] = Field(description="open until staff record an outcome.", examples=["open"])
    outcome: str | None = Field(description="Staff outcome once resolved.", examples=[None])
    note: str | None = Field(description="Staff note.", examples=[None])
    resolved_at: Timestamp | None = Field(description="When it was resolved.", examples=[None])


class AlertsResponse(BaseModel):
    """Alerts, open ones first."""

    alerts: list[AlertResponse] = Field(description="Alerts.")


class WelcomeResponse(BaseModel):
    """Service identity."""

    message: str = Field(description="Greeting.", examples=["Smart Fitting Room service"])
    version: str = Field(description="Service version.", examples=["0.1.0"])
    docs: str = Field(description="Interactive API documentation.", examples=["/docs"])
    openapi: str = Field(description="OpenAPI document.", examples=["/openapi.json"])
    authentication: Literal["on", "off"] = Field(
        description="off when no API keys file is configured: every endpoint is open.", examples=["on"]
    )


class ErrorResponse(BaseModel):
    """Why a request was refused; nothing was changed."""

    detail: str = Field(description="What is wrong.", examples=["unknown room 'room_99'"])


class HealthResponse(BaseModel):
    """Liveness."""

    status: Literal["ok"] = Field(description="The process answers.", examples=["ok"])


class ReadinessResponse(BaseModel):
    """Readiness for traffic."""

    status: Literal["ready", "not ready"] = Field(description="Overall readiness.", examples=["ready"])
    problems: list[str] = Field(
        description="What is not ready, with the reason.", examples=[["models: manifest missing"]]
    )


class LoadedModel(BaseModel):
    """One verified model artifact."""

    name: str = Field(description="Artifact file name.", examples=["duration_model.pkl"])
    version: str = Field(description="SHA-256 of the artifact (its version).", examples=["3b1f…"])


class LoadedModelsResponse(BaseModel):
    """What the server has loaded."""

    loaded: bool = Field(description="True when verified models are in use.", examples=[True])
    error: str | None = Field(description="Why no models are loaded.", examples=[None])
    models: list[LoadedModel] = Field(description="Loaded artifacts.")
    trained_at: str | None = Field(description="When train.py produced them.", examples=[EXAMPLE_TIME])
    sklearn_version: str | None = Field(description="scikit-learn version they were built with.", examples=["1.9.1"])
    data: dict[str, Any] = Field(description="Training-data summary (sessions, date range, labels).")
    metrics: dict[str, Any] = Field(description="Headline held-out metrics.")
    inference: Literal["native", "numpy"] | None = Field(
        description="How requests' rows are scored: native (the compiled tree walk, `make native`) or numpy (its "
        "slower fallback, the same numbers); null without models.",
        examples=["native"],
    )


class RoomConfig(BaseModel):
    """One room as configured (the rooms file's entry)."""

    model_config = ConfigDict(extra="forbid")

    room_id: Identifier = Field(description="Room id.", examples=["room_7"])
    max_items: int = Field(ge=1, le=MAX_ITEMS_PER_REQUEST, description="Most items the room takes.", examples=[8])
    accessible: bool = Field(False, description="Accessible room.", examples=[False])
    attributes: dict[str, Annotated[str, StringConstraints(max_length=200)] | int | float | bool] = Field(
        default_factory=dict, max_length=20, description="Further attributes, kept as given.", examples=[{"floor": 1}]
    )


class RoomsConfigRequest(BaseModel):
    """The store's whole room configuration."""

    model_config = ConfigDict(extra="forbid")

    rooms: list[RoomConfig] = Field(min_length=1, max_length=500, description="Every room of the store.")


class RoomsConfigResponse(BaseModel):
    """What the configuration change left."""

    rooms: list[str] = Field(description="Configured room ids.", examples=[["room_1", "room_7"]])
    kept_occupied: list[str] = Field(
        description="Rooms removed from the configuration but kept until their customer leaves.", examples=[[]]
    )
