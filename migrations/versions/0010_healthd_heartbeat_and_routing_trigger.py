"""healthd heartbeat, and the generation trigger made from shared.models.ROUTING_COLUMNS

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24

- `healthd_heartbeat`: one row healthd rewrites as it runs; the gateway reads
  its age, so a dead healthd (backends no longer checked, leases no longer
  expired) fails readiness instead of passing unseen.
- The update trigger that bumps `registry_generation` listed its columns by
  hand in each migration and missed `student_id` and `registered_at`, which
  the routing snapshot reads (an owner's change was not seen until another
  change came). It is now made from the one list, `ROUTING_COLUMNS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.models import ROUTING_COLUMNS

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE registry_generation SET value = value + 1 WHERE id = 1;"
# The list of 0007 (what downgrade restores).
COLUMNS_0007 = (
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
    "draining",
)


def _update_trigger(columns: Sequence[str]) -> None:
    op.execute("DROP TRIGGER IF EXISTS model_servers_update_bumps_generation")
    op.execute(
        "CREATE TRIGGER model_servers_update_bumps_generation "
        f"AFTER UPDATE OF {', '.join(columns)} ON model_servers BEGIN {BUMP} END"
    )


def upgrade() -> None:
    op.create_table(
        "healthd_heartbeat",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("beat_at", sa.DateTime(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
    )
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger(ROUTING_COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _update_trigger(COLUMNS_0007)
    op.drop_table("healthd_heartbeat")
