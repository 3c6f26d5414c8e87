"""A store's changes, run in arrival order on a thread of their own, and committed together when they queue up.

One thread per store keeps its changes off the event loop and out of the thread pool, where concurrent writers
held threads that fought over the store's lock and the GIL. Changes that arrive while one runs wait in a queue;
the thread takes all of them at once (up to `most`) and runs them in one transaction (`Store.together`), so a
burst pays for one commit and one fsync instead of one each. Nobody hears of a change before that commit. If any
change of such a group fails, the group rolls back whole and each of its changes runs again on its own, so a
failure (a conflict, a bad request) stays with the change that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from fitting_room.store import Store

T = TypeVar("T")

MOST_TOGETHER = 32


@dataclass(frozen=True)
class _Change:
    """One queued change and where its caller waits for the outcome."""

    call: Callable[[], Any]
    context: contextvars.Context
    loop: asyncio.AbstractEventLoop
    outcome: asyncio.Future[Any]

    def settle(self, result: Any, error: BaseException | None) -> None:
        """Hand the outcome to the caller's event loop (from the store's thread)."""
        # RuntimeError: the caller's event loop has closed; nobody is left to tell, and the thread must go on.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.outcome, result, error)


def _settle(outcome: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if outcome.cancelled():  # the caller went away; the change stands (it committed, or failed on its own)
        return
    if error is None:
        outcome.set_result(result)
    else:
        outcome.set_exception(error)


class ChangeQueue:
    """The changes of one store: in arrival order, on one thread, queued ones committed together."""

    def __init__(self, store: Store, most: int = MOST_TOGETHER) -> None:
        """Start the store's thread; `most` caps how many queued changes share one transaction."""
        self._store = store
        self._most = most
        self._queue: queue.SimpleQueue[_Change | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name=f"changes-{store.store_id}", daemon=True)
        self._thread.start()

    async def run(self, change: Callable[..., T], *args: Any) -> T:
        """Run `change(*args)` on the store's thread, in the caller's context (its request id in the logs)."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Change(partial(change, *args), contextvars.copy_context(), loop, outcome))
        return await outcome

    def shutdown(self) -> None:
        """Run the changes already queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self._most:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is None:
                    stop = True
                    break
                group.append(queued)
            self._commit(group)
            if stop:
                return

    def _commit(self, group: Sequence[_Change]) -> None:
        if len(group) > 1:
            results: list[Any] = []
            try:
                with self._store.together() as batch:
                    for change in group:
                        results.append(batch.run(change.context, change.call))
            except BaseException as error:
                if len(results) == len(group):
                    # Every change ran and the commit failed: whether it took effect is unknown (a lost connection
                    # may follow a commit), so nothing runs again; each caller hears it, as a change alone would.
                    for change in group:
                        change.settle(None, error)
                    return
                # A change failed before the commit, so nothing committed: each change runs again alone, below,
                # and its caller hears its own outcome.
            else:
                for change, result in zip(group, results, strict=True):
                    change.settle(result, None)
                return
        for change in group:
            try:
                result = change.context.run(change.call)
            except BaseException as error:  # the caller gets whatever its change raised
                change.settle(None, error)
            else:
                change.settle(result, None)
