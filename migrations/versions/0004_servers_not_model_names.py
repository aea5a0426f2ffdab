"""servers, not model names: optional model_name, backend_model, model details, source

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

- `model_name` becomes optional: without it a registration serves every model
  its backend lists (`reported_models`, kept in sync by healthd).
- `backend_model`: what the backend calls the registered `model_name`; the
  gateway rewrites `model` in the request body to it.
- `model_details`: what the backend's `GET /v1/models` says of each model
  (`max_model_len`, `owned_by`), for the gateway's own `/v1/models`.
- `source`: `api`, or `config` for registrations made from BACKENDS /
  BACKENDS_FILE / UPSTREAM at gateway start.

The generation trigger now also fires on `reported_models`, `backend_model`
and `model_details`: the routing snapshot reads them. SQLite changes a column's
nullability by copying the table, which drops its triggers, so they are
dropped first and created again after.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
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
)
ROUTING_COLUMNS = (*OLD_ROUTING_COLUMNS, "reported_models", "backend_model", "model_details")


def _drop_triggers() -> None:
    for action in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS model_servers_{action}_bumps_generation")


def _create_triggers(columns: Sequence[str]) -> None:
    op.execute(
        "CREATE TRIGGER model_servers_insert_bumps_generation AFTER INSERT ON model_servers "
        f"BEGIN {BUMP} END"
    )
    op.execute(
        "CREATE TRIGGER model_servers_delete_bumps_generation AFTER DELETE ON model_servers "
        f"BEGIN {BUMP} END"
    )
    op.execute(
        "CREATE TRIGGER model_servers_update_bumps_generation "
        f"AFTER UPDATE OF {', '.join(columns)} ON model_servers BEGIN {BUMP} END"
    )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_triggers()
    with op.batch_alter_table("model_servers") as batch:
        batch.alter_column(
            "model_name", existing_type=sa.String(128), type_=sa.String(256), nullable=True
        )
        batch.add_column(sa.Column("backend_model", sa.String(256)))
        batch.add_column(sa.Column("model_details", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="api"))
    if sqlite:
        _create_triggers(ROUTING_COLUMNS)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _drop_triggers()
    op.execute(
        "UPDATE model_servers SET is_active = 0, model_name = '(any)' WHERE model_name IS NULL"
    )
    with op.batch_alter_table("model_servers") as batch:
        batch.drop_column("source")
        batch.drop_column("model_details")
        batch.drop_column("backend_model")
        batch.alter_column(
            "model_name", existing_type=sa.String(256), type_=sa.String(128), nullable=False
        )
    if sqlite:
        _create_triggers(OLD_ROUTING_COLUMNS)
