"""usage_minutes.retried: attempts whose request went on to another backend

A failed-over attempt is the backend's failure but not a request a client saw:
the statistics count requests as attempts minus these.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_minutes",
        sa.Column("retried", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE usage_minutes DROP COLUMN retried")
