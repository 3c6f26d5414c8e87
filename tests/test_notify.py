"""The doorbell that wakes live streams, and PostgreSQL NOTIFY carrying it across replicas."""

from __future__ import annotations

import threading

import anyio

from fitting_room.engine import RoomSpec
from fitting_room.notify import Doorbell, libpq_dsn
from fitting_room.store import Database
from tests.engine_factories import at
from tests.fakes import make_service


def test_a_ring_from_another_thread_wakes_a_waiter():
    bell = Doorbell()

    async def main() -> bool:
        seen = bell.rings
        threading.Timer(0.01, bell.ring).start()
        return await bell.wait(30, seen)

    assert anyio.run(main) is True


def test_a_ring_before_waiting_is_not_lost_and_silence_times_out():
    bell = Doorbell()
    seen = bell.rings
    bell.ring()
    assert anyio.run(bell.wait, 30, seen) is True
    assert anyio.run(bell.wait, 0.01, bell.rings) is False


def test_a_change_committed_by_another_replica_rings_this_ones_bell(postgres_url: str):
    here = Database(postgres_url)
    elsewhere = make_service(postgres_url, [RoomSpec("room_1", 6)])  # its own engine, like another process
    here.listen()
    try:

        async def main() -> bool:
            seen = here.bell.rings
            threading.Thread(target=elsewhere.assign, args=(["sku-0001"], False, at(0))).start()
            return await here.bell.wait(30, seen)

        assert anyio.run(main) is True
    finally:
        here.close()
        elsewhere.store.close()


def test_libpq_dsn_drops_the_driver_name():
    assert libpq_dsn("postgresql+psycopg://shop@127.0.0.1:5433/rooms") == "postgresql://shop@127.0.0.1:5433/rooms"
