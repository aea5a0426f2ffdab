"""usage minutes: what the gateway served, per minute, backend and model

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23

`/admin/stats` and the dashboard's charts read windows of 5 minutes to 24
hours from these rows. Every worker adds its own counts every few seconds
(one upsert per minute, backend and model), so the figures are those of all
workers. Latency and time to first token are kept as counts per fixed
bucket (gateway/accounting/windows.py), so percentiles can be merged across workers
and minutes. Rows older than a day and an hour are pruned.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_minutes",
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("latency_counts", sa.JSON(), nullable=False),
        sa.Column("first_token_counts", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("minute", "server_id", "model"),
    )
    op.create_index("idx_usage_minutes_minute", "usage_minutes", ["minute"])


def downgrade() -> None:
    op.drop_index("idx_usage_minutes_minute", "usage_minutes")
    op.drop_table("usage_minutes")
