"""Drive a live server through the README's scenario; every step asserts.

    python integration_test.py [--base-url http://127.0.0.1:8000] [--api-key KEY]

Fills every free room, joins the waitlist, frees a room and checks the first waiting customer is promoted,
predicts a duration and checks an exit with a missing item. It leaves the floor as it found it (its own
sessions are completed or cancelled), prints a summary and exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

ITEMS = ["sku-0042", "sku-0015"]


class ScenarioError(AssertionError):
    """A step of the scenario did not see what it expected."""


def check(condition: bool, message: str) -> None:
    """Fail the current step with `message` unless `condition` holds."""
    if not condition:
        raise ScenarioError(message)


@dataclass
class Client:
    """A thin JSON client that fails loudly on unexpected status codes."""

    base_url: str
    api_key: str | None = None
    http: requests.Session = field(default_factory=requests.Session)

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON body, asserting the status code."""
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        response = self.http.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)
        check(
            response.status_code == expect,
            f"{method} {path}: expected {expect}, got {response.status_code}: {response.text[:300]}",
        )
        return response.json()


@dataclass
class Scenario:
    """The steps, sharing what earlier steps created."""

    client: Client
    mine: list[str] = field(default_factory=list)
    seated: dict[str, str] = field(default_factory=dict)
    waiting: str = ""
    notes: list[str] = field(default_factory=list)

    def service_answers(self) -> None:
        """GET / names the service and its docs."""
        body = self.client.call("GET", "/")
        check("version" in body and body.get("docs") == "/docs", f"unexpected welcome body {body}")

    def fill_every_room(self) -> None:
        """Assign customers until one is waitlisted: every free room they fit gets one."""
        status = self.client.call("GET", "/rooms/status")
        check(len(status["rooms"]) > 0, "the store has no rooms")
        free = sum(r["status"] == "available" for r in status["rooms"])
        for _ in range(len(status["rooms"]) + 1):
            ahead = len(self.client.call("GET", "/rooms/status")["waitlist"])
            body = self.client.call("POST", "/assign_room", json={"item_ids": ITEMS})
            self.mine.append(body["session_id"])
            if body["status"] == "waitlisted":
                check(body["room_id"] is None and body["position"] == ahead + 1, f"waitlist body {body}")
                check(body["estimated_wait"] > 0, f"estimated wait must be positive: {body}")
                self.waiting = body["session_id"]
                break
            check(body["estimated_wait"] == 0 and body["position"] is None, f"assigned body {body}")
            self.seated[body["session_id"]] = body["room_id"]
        check(bool(self.waiting), "every customer got a room: the waitlist was never reached")
        check(len(set(self.seated.values())) == len(self.seated), "two customers got the same room")
        check(len(self.seated) <= free, f"{len(self.seated)} seated but only {free} rooms were free")
        after = self.client.call("GET", "/rooms/status")
        still_free = [
            r["room_id"] for r in after["rooms"] if r["status"] == "available" and r["max_items"] >= len(ITEMS)
        ]
        check(not still_free, f"rooms {still_free} fit the basket but stay free while a customer waits")
        session = self.client.call("GET", f"/sessions/{self.waiting}")
        check(session["status"] == "waitlisted" and session["estimated_wait"] > 0, f"session {session}")
        self.notes.append(f"{len(status['rooms'])} rooms, {len(self.seated)} filled by the scenario")

    def release_promotes_first_waiting(self) -> None:
        """An exit with every item frees the room and hands it to the first waiting customer."""
        check(bool(self.seated), "the scenario seated nobody it could release")
        first = self.client.call("GET", "/rooms/status")["waitlist"][0]["session_id"]
        session_id, room_id = next(iter(self.seated.items()))
        body = self.client.call(
            "POST",
            "/detect_anomaly",
            json={"session_id": session_id, "room_id": room_id, "exit_scans": ITEMS},
        )
        check(body["room_released"] is True, f"room not released: {body}")
        check(body["missing_items"] == [] and body["unexpected_items"] == [], f"exit body {body}")
        check(
            body["next_assignment"] == {"session_id": first, "room_id": room_id},
            f"expected {first} promoted to {room_id}, got {body['next_assignment']}",
        )
        del self.seated[session_id]
        self.seated[first] = room_id
        if first == self.waiting:
            promoted = self.client.call("GET", f"/sessions/{self.waiting}")
            check(promoted["status"] == "assigned" and promoted["room_id"] == room_id, f"{promoted}")
        done = self.client.call("GET", f"/sessions/{session_id}")
        check(done["status"] == "completed" and done["anomaly"] is not None, f"completed session {done}")

    def predict_duration(self) -> None:
        """A prediction with an interval that brackets it."""
        body = self.client.call(
            "POST", "/predict_duration", json={"item_ids": ITEMS, "entry_time": "2026-12-04T14:30:00+00:00"}
        )
        low, high = body["interval"]["low"], body["interval"]["high"]
        check(0 < low <= body["predicted_duration"] <= high, f"interval does not bracket: {body}")
        self.notes.append(f"predicted {body['predicted_duration']:.1f} min [{low:.1f}, {high:.1f}]")

    def detect_missing_item(self) -> None:
        """The README's analysis-only example: an item not scanned out is named with a reason."""
        body = self.client.call(
            "POST",
            "/detect_anomaly",
            json={
                "session_id": "some-unique-session-id",
                "room_id": self.client.call("GET", "/rooms/status")["rooms"][0]["room_id"],
                "actual_duration": 25.5,
                "predicted_duration": 12.0,
                "entry_scans": ITEMS,
                "exit_scans": ITEMS[:1],
                "entry_time": "2026-12-04T14:30:00+00:00",
            },
        )
        check(body["missing_items"] == ITEMS[1:], f"missing items {body['missing_items']}")
        check(any(r["code"] == "missing_items" for r in body["reasons"]), f"reasons {body['reasons']}")
        check(body["room_released"] is False and body["next_assignment"] is None, f"{body}")
        check(0 <= body["anomaly_score"] <= 1, f"score {body['anomaly_score']}")
        self.notes.append(f"missing item scored {body['anomaly_score']:.2f} ({body['risk_level']})")

    def clean_up(self) -> None:
        """Complete the scenario's seated sessions and cancel its waiting ones."""
        for session_id in self.mine:
            session = self.client.call("GET", f"/sessions/{session_id}")
            if session["status"] == "waitlisted":
                self.client.call("POST", f"/sessions/{session_id}/cancel")
            elif session["status"] == "assigned":
                # Releasing may promote another of ours; it is completed later in this loop.
                self.client.call(
                    "POST",
                    "/detect_anomaly",
                    json={"session_id": session_id, "room_id": session["room_id"], "exit_scans": ITEMS},
                )
        leftovers = [
            s for s in self.mine if self.client.call("GET", f"/sessions/{s}")["status"] in ("waitlisted", "assigned")
        ]
        check(not leftovers, f"sessions left behind: {leftovers}")

    def steps(self) -> list[Callable[[], None]]:
        """The scenario in order."""
        return [
            self.service_answers,
            self.fill_every_room,
            self.release_promotes_first_waiting,
            self.predict_duration,
            self.detect_missing_item,
            self.clean_up,
        ]


def run(base_url: str, api_key: str | None = None) -> bool:
    """Run every step, print a line per step and a summary; True when all passed."""
    scenario = Scenario(Client(base_url.rstrip("/"), api_key))
    passed = 0
    for step in scenario.steps():
        started = time.perf_counter()
        try:
            step()
        except (ScenarioError, requests.RequestException, KeyError, IndexError) as err:
            print(f"FAIL {step.__name__}: {err}")
            break
        passed += 1
        print(f"ok   {step.__name__} ({(time.perf_counter() - started) * 1000:.0f} ms)")
    total = len(scenario.steps())
    for note in scenario.notes:
        print(f"     {note}")
    print(f"integration: {passed} passed, {total - passed} failed")
    return passed == total


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="server to test")
    parser.add_argument("--api-key", default=None, help="X-API-Key to send, when keys are configured")
    args = parser.parse_args(argv)
    return 0 if run(args.base_url, args.api_key) else 1


if __name__ == "__main__":
    sys.exit(main())
