"""management tokens and drain

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23

- `management_token_hash`: SHA-256 of the token a registration's holder gets once
  at registration; with it they update, drain or deregister that registration
  and no other, without the admin key. Only the hash is stored.
- `draining`: no new requests go to the backend; those in flight finish. The
  routing snapshot reads it, so the generation trigger fires on it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE registry_generation SET value = value + 1 WHERE id = 1;"
OLD_ROUTING_COLUMNS = (
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
    "reported_models",
    "backend_model",
    "model_details",
)
ROUTING_COLUMNS = (*OLD_ROUTING_COLUMNS, "draining")


def _update_trigger(columns: Sequence[str]) -> None:
    op.execute("DROP TRIGGER IF EXISTS model_servers_update_bumps_generation")
    op.execute(
        "CREATE TRIGGER model_servers_update_bumps_generation "
        f"AFTER UPDATE OF {', '.join(columns)} ON model_servers BEGIN {BUMP} END"
    )


def upgrade() -> None:
    op.add_column("model_servers", sa.Column("management_token_hash", sa.String(64)))
    op.add_column(
        "model_servers",
        sa.Column("draining", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger(ROUTING_COLUMNS)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:  # the table is copied: its triggers go with the old one
        for action in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS model_servers_{action}_bumps_generation")
    with op.batch_alter_table("model_servers") as batch:
        batch.drop_column("draining")
        batch.drop_column("management_token_hash")
    if sqlite:
        for action in ("insert", "delete"):
            op.execute(
                f"CREATE TRIGGER model_servers_{action}_bumps_generation "
                f"AFTER {action.upper()} ON model_servers BEGIN {BUMP} END"
            )
        _update_trigger(OLD_ROUTING_COLUMNS)
