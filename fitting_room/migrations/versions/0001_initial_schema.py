"""Chain-ready schema: stores, rooms, sessions, alerts, events, idempotency keys.

Revision ID: 0001
Revises: (none)
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import fitting_room.tables

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("events_by_store", ["store_id", "event_id"], unique=False)

    op.create_table(
        "idempotency_keys",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", fitting_room.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("store_id", "key"),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)

    op.create_table(
        "store_state",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("next_queue_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("store_id"),
    )
    op.create_table(
        "rooms",
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("max_items", sa.Integer(), nullable=False),
        sa.Column("accessible", sa.Boolean(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=True),
        sa.Column("free_since", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.Column("last_event_at", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store_state.store_id"],
        ),
        sa.PrimaryKeyConstraint("store_id", "room_id"),
        sa.UniqueConstraint("session_id"),
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("item_ids", sa.JSON(), nullable=False),
        sa.Column("needs_accessible", sa.Boolean(), nullable=False),
        sa.Column("arrived_at", fitting_room.tables.UTCDateTime(), nullable=False),
        sa.Column("queue_seq", sa.Integer(), nullable=True),
        sa.Column("passed_over", sa.Integer(), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=True),
        sa.Column("assigned_at", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.Column("ended_at", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.Column("last_event_at", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.Column("predicted_duration", sa.Float(), nullable=False),
        sa.Column("interval_low", sa.Float(), nullable=False),
        sa.Column("interval_high", sa.Float(), nullable=False),
        sa.Column("interval_level", sa.Float(), nullable=False),
        sa.Column("duration_quantiles", sa.JSON(), nullable=False),
        sa.Column("unknown_item_ids", sa.JSON(), nullable=False),
        sa.Column("exit_scans", sa.JSON(), nullable=True),
        sa.Column("actual_duration", sa.Float(), nullable=True),
        sa.Column("anomaly", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store_state.store_id"],
        ),
        sa.PrimaryKeyConstraint("session_id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "one_active_session_per_room",
            ["store_id", "room_id"],
            unique=True,
            sqlite_where=sa.text("status = 'assigned'"),
            postgresql_where=sa.text("status = 'assigned'"),
        )
        batch_op.create_index("one_waitlist_place_per_number", ["store_id", "queue_seq"], unique=True)
        batch_op.create_index("sessions_by_status", ["store_id", "status"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=64), nullable=False),
        sa.Column("raised_at", fitting_room.tables.UTCDateTime(), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("risk_level", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("missing_items", sa.JSON(), nullable=False),
        sa.Column("unexpected_items", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("resolved_at", fitting_room.tables.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.session_id"],
        ),
        sa.ForeignKeyConstraint(
            ["store_id"],
            ["store_state.store_id"],
        ),
        sa.PrimaryKeyConstraint("alert_id"),
        sa.UniqueConstraint("session_id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_store_id"), ["store_id"], unique=False)


def downgrade() -> None:
    """Undo this revision."""
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_store_id"))

    op.drop_table("alerts")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("sessions_by_status")
        batch_op.drop_index("one_waitlist_place_per_number")
        batch_op.drop_index(
            "one_active_session_per_room",
            sqlite_where=sa.text("status = 'assigned'"),
            postgresql_where=sa.text("status = 'assigned'"),
        )

    op.drop_table("sessions")
    op.drop_table("rooms")
    op.drop_table("store_state")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("events_by_store")

    op.drop_table("events")
