"""routing support: registry generation counter and per-backend usage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22

The gateway keeps the registry in memory and reloads it when it changes. To
know cheaply *that* it changed, triggers bump `registry_generation.value`
whenever a column that routing reads changes in `model_servers`; the gateway
polls that one row. Health-history inserts and metric updates do not bump it.

`backend_usage` holds the counters the gateway buffers in memory and flushes
every few seconds (requests, failures, latency and tokens per backend).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROUTING_COLUMNS = (
    "model_name",
    "endpoint_url",
    "api_key",
    "streaming_supported",
    "tags",
    "priority",
    "weight",
    "max_concurrent",
    "health_status",
    "status_changed_at",
    "is_active",
)


def upgrade() -> None:
    op.create_table(
        "registry_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("id = 1", name="ck_registry_generation_single_row"),
    )
    op.execute("INSERT INTO registry_generation (id, value) VALUES (1, 0)")
    bump = "UPDATE registry_generation SET value = value + 1 WHERE id = 1;"
    if op.get_bind().dialect.name == "sqlite":
        columns = ", ".join(ROUTING_COLUMNS)
        op.execute(
            f"CREATE TRIGGER model_servers_insert_bumps_generation AFTER INSERT ON model_servers "
            f"BEGIN {bump} END"
        )
        op.execute(
            f"CREATE TRIGGER model_servers_delete_bumps_generation AFTER DELETE ON model_servers "
            f"BEGIN {bump} END"
        )
        op.execute(
            f"CREATE TRIGGER model_servers_update_bumps_generation "
            f"AFTER UPDATE OF {columns} ON model_servers BEGIN {bump} END"
        )

    op.create_table(
        "backend_usage",
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("requests_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failures_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("latency_ms_total", sa.Float(), nullable=False, server_default="0"),
        sa.Column("prompt_tokens_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("completion_tokens_total", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_request_at", sa.DateTime()),
    )


def downgrade() -> None:
    op.drop_table("backend_usage")
    if op.get_bind().dialect.name == "sqlite":
        for action in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS model_servers_{action}_bumps_generation")
    op.drop_table("registry_generation")
