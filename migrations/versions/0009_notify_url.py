"""notify url: where healthd tells a registration's owner of its health transitions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_servers", sa.Column("notify_url", sa.Text()))


def downgrade() -> None:
    op.execute("ALTER TABLE model_servers DROP COLUMN notify_url")
