"""Prometheus metrics of one app instance, in a registry of its own (no process-global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Request, assignment, alert and model metrics; no label carries a session or customer id."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fitting_room_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fitting_room_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.assignments = Counter(
            "fitting_room_assignments",
            "Customers seated or waitlisted, by outcome (assigned, waitlisted, promoted).",
            ["outcome"],
            registry=self.registry,
        )
        self.alerts = Counter(
            "fitting_room_alerts",
            "Alerts raised, by reason code.",
            ["reason"],
            registry=self.registry,
        )
        self.models = Gauge(
            "fitting_room_model_info",
            "Loaded model artifacts (value 1), by model and version (SHA-256 prefix).",
            ["model", "version"],
            registry=self.registry,
        )
        self.waitlist = Gauge("fitting_room_waitlist_length", "Customers waiting for a room.", registry=self.registry)

    def watch_waitlist(self, read_length: Callable[[], int]) -> None:
        """Read the waitlist length from the store at scrape time."""
        self.waitlist.set_function(lambda: float(read_length()))

    def set_models(self, versions: Iterable[tuple[str, str]]) -> None:
        """Replace the loaded-model info with these (model, version) pairs."""
        self.models.clear()
        for model, version in versions:
            self.models.labels(model=model, version=version).set(1)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
