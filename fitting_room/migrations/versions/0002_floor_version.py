"""A version number per store, bumped by every change to its rooms or active sessions.

Replicas compare it with the floor they hold in memory: equal means the cached floor is current, so an
operation no longer reads every room and waiting customer from the database.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add store_state.floor_version, 0 for existing stores."""
    with op.batch_alter_table("store_state") as batch_op:
        batch_op.add_column(sa.Column("floor_version", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop store_state.floor_version."""
    with op.batch_alter_table("store_state") as batch_op:
        batch_op.drop_column("floor_version")
