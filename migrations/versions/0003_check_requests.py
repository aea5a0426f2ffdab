"""check requests: the admin API asks healthd for an immediate probe

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

`POST /admin/servers/{id}/check` inserts a row; healthd polls this table every
tick, removes the rows it takes and probes those backends at once. The two
processes still meet only in the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "check_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("check_requests")
