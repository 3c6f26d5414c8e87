"""An index on each store's sessions by arrival time.

Express's wait projection forecasts who will arrive next from the store's latest arrivals; without the index
that read scans all of the store's sessions, which grow with every customer the store has ever had.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add sessions_by_arrival (store_id, arrived_at)."""
    op.create_index("sessions_by_arrival", "sessions", ["store_id", "arrived_at"])


def downgrade() -> None:
    """Drop sessions_by_arrival."""
    op.drop_index("sessions_by_arrival", table_name="sessions")
