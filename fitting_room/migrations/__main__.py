"""`python -m fitting_room.migrations` (`make migrate`): migrate the configured database to the newest schema."""

from fitting_room.migrations import current, head, upgrade
from fitting_room.settings import Settings
from fitting_room.store import make_engine


def main() -> None:
    """Upgrade FITTING_ROOM_DATABASE and say which revision it is at."""
    engine = make_engine(Settings().database_url)
    try:
        before = current(engine)
        upgrade(engine)
        after = current(engine)
    finally:
        engine.dispose()
    change = "already at" if before == after else f"migrated from {before or 'empty'} to"
    print(f"database {change} revision {after} (newest: {head()})")


if __name__ == "__main__":
    main()
