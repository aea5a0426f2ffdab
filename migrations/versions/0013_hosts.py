"""hosts as people: owned model names

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

- `model_claims`: a model name a host (or the admin) owns, with the co-hosts it
  allows. The routing snapshot filters servers by it, so a change of a claim
  bumps `registry_generation` (triggers on insert, update and delete).
- `model_servers.notify_format`: json (null), slack, discord or ntfy.
- `notify_outbox`: notifications the gateway asks healthd to send (the admin
  drained or deregistered a server).
- `model_servers.model_faults` (model → why its canary generation failed: the
  server is unhealthy for that model alone; routing reads it, so the update
  trigger is made again from ROUTING_COLUMNS) and `canaries_sent`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.models import ROUTING_COLUMNS

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE registry_generation SET value = value + 1 WHERE id = 1;"
COLUMNS_0010 = tuple(column for column in ROUTING_COLUMNS if column != "model_faults")


def _update_trigger(columns: Sequence[str]) -> None:
    op.execute("DROP TRIGGER IF EXISTS model_servers_update_bumps_generation")
    op.execute(
        "CREATE TRIGGER model_servers_update_bumps_generation "
        f"AFTER UPDATE OF {', '.join(columns)} ON model_servers BEGIN {BUMP} END"
    )


CLAIM_TRIGGERS = {
    "model_claims_insert_bumps_generation": "AFTER INSERT",
    "model_claims_update_bumps_generation": "AFTER UPDATE",
    "model_claims_delete_bumps_generation": "AFTER DELETE",
}


def upgrade() -> None:
    op.create_table(
        "model_claims",
        sa.Column("model_name", sa.String(256), primary_key=True),
        sa.Column("owner_id", sa.String(36)),
        sa.Column("owner_label", sa.String(128)),
        sa.Column("co_hosts", sa.JSON(), nullable=False, server_default="[]"),
        sa.Column("claimed_at", sa.DateTime(), nullable=False),
    )
    op.add_column("model_servers", sa.Column("notify_format", sa.String(16)))
    op.add_column(
        "model_servers", sa.Column("model_faults", sa.JSON(), nullable=False, server_default="{}")
    )
    op.add_column(
        "model_servers",
        sa.Column("canaries_sent", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "notify_outbox",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        for name, when in CLAIM_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} ON model_claims BEGIN {BUMP} END")
        _update_trigger(ROUTING_COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger(COLUMNS_0010)
        for name in CLAIM_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("notify_outbox")
    for column in ("notify_format", "model_faults", "canaries_sent"):
        op.execute(f"ALTER TABLE model_servers DROP COLUMN {column}")
    op.drop_table("model_claims")
