"""registry: model_servers and health_checks

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Section 6.2 of the requirements, plus what routing and healthd need: tags,
priority, weight, max_concurrent, the last status transition, the models the
backend itself reports, health metrics, and soft deletion.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_servers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("endpoint_url", sa.Text(), nullable=False),
        sa.Column("api_key", sa.Text()),
        sa.Column("max_tokens", sa.Integer()),
        sa.Column("context_length", sa.Integer()),
        sa.Column("streaming_supported", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("student_id", sa.String(128)),
        sa.Column("description", sa.Text()),
        sa.Column("tags", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("weight", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("max_concurrent", sa.Integer()),
        sa.Column("health_status", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("last_checked_at", sa.DateTime()),
        sa.Column("status_changed_at", sa.DateTime()),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_response_time_ms", sa.Float()),
        sa.Column("reported_models", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("success_rate", sa.Float()),
        sa.Column("avg_response_time_ms", sa.Float()),
        sa.Column("uptime_percent", sa.Float()),
        sa.Column("is_active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("deregistered_at", sa.DateTime()),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_index("idx_model_servers_model_name", "model_servers", ["model_name"])
    op.create_index("idx_model_servers_health_status", "model_servers", ["health_status"])
    op.create_index("idx_model_servers_active", "model_servers", ["is_active"])

    op.create_table(
        "health_checks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("response_time_ms", sa.Float()),
        sa.Column("http_status", sa.Integer()),
        sa.Column("error_message", sa.Text()),
    )
    op.create_index(
        "idx_health_checks_server_checked", "health_checks", ["server_id", "checked_at"]
    )
    op.create_index("idx_health_checks_checked_at", "health_checks", ["checked_at"])


def downgrade() -> None:
    op.drop_table("health_checks")
    op.drop_table("model_servers")
