"""Schema migrations of the state store (Alembic), run from code: no alembic.ini to keep in step.

`upgrade(engine)` brings any database to the newest revision; `make migrate` and the service's start call it.
On PostgreSQL an advisory lock makes replicas that start together migrate one after the other.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from fitting_room.errors import DataContractError

SCRIPT_LOCATION = Path(__file__).resolve().parent
# Any fixed number: the key of the advisory lock every replica takes while it migrates.
MIGRATION_LOCK_KEY = 73_204_611


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration over this package's scripts (and an open connection, when given)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision id."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None, "the migrations folder holds no revision"
    return revision


def current(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision`, creating the schema in an empty database."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        if MigrationContext.configure(conn).get_current_revision() is None and inspect(conn).get_table_names():
            raise DataContractError(
                "the database holds tables but no migration history (made before migrations existed, or by "
                "another program): point FITTING_ROOM_DATABASE at a new database"
            )
        command.upgrade(config(conn), revision)
