"""hosts as people: owned model names

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-04

- `model_claims`: a model name a host (or the admin) owns, with the co-hosts it
  allows. The routing snapshot filters servers by it, so a change of a claim
  bumps `registry_generation` (triggers on insert, update and delete).
- `model_servers.notify_format`: json (null), slack, discord or ntfy.
- `notify_outbox`: notifications the gateway asks healthd to send (the admin
  drained or deregistered a server).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE registry_generation SET value = value + 1 WHERE id = 1;"
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


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in CLAIM_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("notify_outbox")
    op.execute("ALTER TABLE model_servers DROP COLUMN notify_format")
    op.drop_table("model_claims")
