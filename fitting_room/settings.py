"""Service configuration: one pydantic-settings class read from FITTING_ROOM_* environment variables."""

from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_DIR = Path(__file__).resolve().parent.parent


class Policy(StrEnum):
    """Order in which waiting customers are offered a freed room."""

    FIFO = "fifo"
    EXPRESS = "express"


class Settings(BaseSettings):
    """Everything an installation can change without touching code."""

    model_config = SettingsConfigDict(env_prefix="FITTING_ROOM_", frozen=True)

    data_dir: Path = Field(Path("data"), description="Folder holding item_database.json.")
    model_dir: Path = Field(Path("models"), description="Folder holding the joblib model files.")
    database: str = Field(
        "data/fitting_rooms.db",
        description="State store: a file path means SQLite; postgresql://user@host:port/db (served by psycopg 3) "
        "or any SQLAlchemy URL is used as given.",
    )
    rooms_file: Path = Field(
        REPO_DIR / "rooms.json",
        description='JSON list of rooms: [{"room_id": "room_1", "max_items": 8, "accessible": false}]; a chain '
        'writes {"<store id>": [rooms...] or "<that store\'s rooms file>", ...}.',
    )
    models_per_store: bool = Field(
        False,
        description="Each store uses its own models from model_dir/<store id>/ instead of the shared model_dir.",
    )
    timezone: str = Field("UTC", description="IANA time zone of the store, for time-of-day features.")
    policy: Policy = Field(Policy.FIFO, description="Waitlist policy: fifo or express.")
    api_keys_file: Path | None = Field(
        None,
        description='JSON {"<key>": "kiosk" | "staff" | "admin"} (the default store) or {"<key>": {"role": '
        '"kiosk", "store": "berlin-01"}}; unset means the service runs open, for the default store.',
    )
    max_passes: int = Field(
        3,
        ge=0,
        description="How often a room that was a waiting customer's turn may go to someone else before the next "
        "fitting room is held for them.",
    )
    express_aging: float = Field(
        2.0,
        ge=0,
        description="express: once a customer has waited this multiple of a FIFO newcomer's wait, serve them in "
        "arrival order; 0 switches the cap off.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The store's time zone object."""
        return ZoneInfo(self.timezone)

    @property
    def database_url(self) -> str:
        """SQLAlchemy URL of the state store (a plain path becomes a SQLite file URL)."""
        if self.database.startswith(("postgresql://", "postgres://")):
            # As people write it; SQLAlchemy would pick psycopg2 for the bare scheme, we ship psycopg 3.
            return "postgresql+psycopg://" + self.database.split("://", 1)[1]
        if "://" in self.database:
            return self.database
        return f"sqlite:///{Path(self.database).expanduser().resolve()}"
