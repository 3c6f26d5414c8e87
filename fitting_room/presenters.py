"""Turn the service's domain views into the API's response bodies."""

from __future__ import annotations

from typing import Any

from fitting_room.engine import IntervalLike, Session, SessionStatus
from fitting_room.estimates import WaitInterval as ProjectedInterval
from fitting_room.schemas import (
    AlertResponse,
    Anomaly,
    AnomalyReason,
    AssignRoomResponse,
    DetectAnomalyResponse,
    Interval,
    LoadedModel,
    LoadedModelsResponse,
    PredictDurationResponse,
    RoomsStatusResponse,
    RoomStatus,
    SessionRef,
    SessionResponse,
    WaitInterval,
    WaitlistEntry,
)
from fitting_room.service import AnomalyLike, ExitResult, FloorView, RoomView, SessionView
from fitting_room.store import Alert


def interval(prediction: IntervalLike) -> Interval:
    """The prediction's central interval."""
    return Interval(low=prediction.low, high=prediction.high, level=prediction.level)


def wait_interval(projected: ProjectedInterval | None) -> WaitInterval | None:
    """The projected wait's central interval, if the customer is waiting."""
    if projected is None:
        return None
    return WaitInterval(low=projected.low, high=projected.high, level=projected.level)


def prediction_response(prediction: IntervalLike) -> PredictDurationResponse:
    """Body of POST /predict_duration."""
    return PredictDurationResponse(
        predicted_duration=prediction.median,
        interval=interval(prediction),
        unknown_item_ids=list(prediction.unknown_item_ids),
    )


def assignment_response(view: SessionView) -> AssignRoomResponse:
    """Body of POST /assign_room."""
    session = view.session
    assigned = session.status is SessionStatus.ASSIGNED
    return AssignRoomResponse(
        status="assigned" if assigned else "waitlisted",
        session_id=session.session_id,
        room_id=session.room_id,
        predicted_duration=session.prediction.median,
        interval=interval(session.prediction),
        estimated_wait=0.0 if assigned else float(view.estimated_wait or 0.0),
        wait_interval=None if assigned else wait_interval(view.wait_interval),
        position=None if assigned else view.position,
        unknown_item_ids=list(session.prediction.unknown_item_ids),
    )


def anomaly_body(anomaly: AnomalyLike) -> Anomaly:
    """The verdict part shared by exit checks, sessions and alerts."""
    level = anomaly.risk_level
    assert level in ("low", "medium", "high"), level
    return Anomaly(
        is_anomaly=anomaly.is_anomaly,
        anomaly_score=anomaly.anomaly_score,
        risk_level=level,
        reasons=[AnomalyReason(code=r.code, message=r.message) for r in anomaly.reasons],
        missing_items=list(anomaly.missing_items),
        unexpected_items=list(anomaly.unexpected_items),
    )


def exit_response(result: ExitResult) -> DetectAnomalyResponse:
    """Body of POST /detect_anomaly."""
    promoted = result.next_assignment
    next_ref = None
    if promoted is not None and promoted.room_id is not None:
        next_ref = SessionRef(session_id=promoted.session_id, room_id=promoted.room_id)
    return DetectAnomalyResponse(
        session_id=result.session_id,
        actual_duration=result.duration,
        predicted_duration=result.predicted_duration,
        room_released=result.room_released,
        next_assignment=next_ref,
        alert_id=result.alert_id,
        # The verdict's fields as built (nested models included), not dumped and validated a second time.
        **dict(anomaly_body(result.anomaly)),
    )


def session_response(view: SessionView) -> SessionResponse:
    """Body of GET /sessions/{id} and POST /sessions/{id}/cancel."""
    session = view.session
    completion = view.completion
    anomaly = Anomaly.model_validate(completion.anomaly) if completion else None
    return SessionResponse(
        session_id=session.session_id,
        status=session.status.value,
        room_id=session.room_id,
        position=view.position,
        estimated_wait=view.estimated_wait if session.status is SessionStatus.WAITLISTED else None,
        wait_interval=wait_interval(view.wait_interval) if session.status is SessionStatus.WAITLISTED else None,
        item_ids=list(session.item_ids),
        accessible=session.needs_accessible,
        arrived_at=session.arrived_at,
        entry_time=session.assigned_at,
        ended_at=session.ended_at,
        predicted_duration=session.prediction.median,
        interval=interval(session.prediction),
        actual_duration=completion.actual_duration if completion else None,
        exit_scans=completion.exit_scans if completion else None,
        anomaly=anomaly,
    )


def _room_status(view: RoomView) -> RoomStatus:
    session: Session | None = view.session
    return RoomStatus(
        room_id=view.room.room_id,
        status="available" if session is None else "occupied",
        max_items=view.room.spec.max_items,
        accessible=view.room.spec.accessible,
        session_id=session.session_id if session else None,
        entry_time=session.assigned_at if session else None,
        item_count=session.item_count if session else None,
        predicted_duration=session.prediction.median if session else None,
        predicted_end=view.predicted_end,
        predicted_free_at=view.predicted_free_at,
    )


def floor_response(view: FloorView) -> RoomsStatusResponse:
    """Body of GET /rooms/status."""
    return RoomsStatusResponse(
        at=view.at,
        rooms=[_room_status(r) for r in view.rooms],
        waitlist=[
            WaitlistEntry(
                session_id=w.session.session_id,
                position=w.position or 0,
                estimated_wait=w.estimated_wait or 0.0,
                wait_interval=wait_interval(w.wait_interval) or WaitInterval(low=0.0, high=0.0, level=0.8),
                arrived_at=w.session.arrived_at,
                item_count=w.session.item_count,
                accessible=w.session.needs_accessible,
                predicted_duration=w.session.prediction.median,
            )
            for w in view.waitlist
        ],
    )


def alert_response(alert: Alert) -> AlertResponse:
    """One alert for staff."""
    return AlertResponse(
        alert_id=alert.alert_id,
        session_id=alert.session_id,
        room_id=alert.room_id,
        raised_at=alert.raised_at,
        anomaly_score=alert.anomaly_score,
        risk_level=alert.risk_level,
        reasons=[AnomalyReason.model_validate(r) for r in alert.reasons],
        missing_items=alert.missing_items,
        unexpected_items=alert.unexpected_items,
        status="resolved" if alert.status == "resolved" else "open",
        outcome=alert.outcome,
        note=alert.note,
        resolved_at=alert.resolved_at,
    )


def models_response(manifest: dict[str, Any], error: str | None, inference: str | None) -> LoadedModelsResponse:
    """Body of GET /models from the verified manifest and the loaded models' inference path (None without)."""
    artifacts = manifest.get("artifacts", {})
    return LoadedModelsResponse(
        loaded=error is None and bool(artifacts),
        error=error,
        models=[LoadedModel(name=name, version=entry["sha256"]) for name, entry in sorted(artifacts.items())],
        trained_at=manifest.get("trained_at"),
        sklearn_version=manifest.get("sklearn_version"),
        data=dict(manifest.get("data", {})),
        metrics=dict(manifest.get("headline_metrics", {})),
        inference=inference,
    )
