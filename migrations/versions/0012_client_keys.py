"""client keys, groups and usage per key (clients as people, #20)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

- `client_keys`: a client's key, kept as its SHA-256 and a visible prefix, with
  its owner, group, limits, models, expiry and (soft) revocation.
- `client_groups`: a class's namespace: default limits and allowed models.
- `keys_generation`: bumped by triggers when a key or group changes (not when a
  key is merely used), so every worker reloads its keys within a poll.
- `key_usage_minutes`: requests, tokens, failures and latency per key, model
  and minute.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.models import KEY_COLUMNS

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUMP = "UPDATE keys_generation SET value = value + 1 WHERE id = 1;"
# (trigger name, event, table)
TRIGGERS = (
    ("client_keys_insert_bumps_keys", "INSERT", "client_keys"),
    ("client_keys_delete_bumps_keys", "DELETE", "client_keys"),
    ("client_keys_update_bumps_keys", f"UPDATE OF {', '.join(KEY_COLUMNS)}", "client_keys"),
    ("client_groups_insert_bumps_keys", "INSERT", "client_groups"),
    ("client_groups_delete_bumps_keys", "DELETE", "client_groups"),
    ("client_groups_update_bumps_keys", "UPDATE", "client_groups"),
)


def upgrade() -> None:
    op.create_table(
        "client_keys",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("group_name", sa.String(100)),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime()),
        sa.Column("expires_at", sa.DateTime()),
        sa.Column("revoked_at", sa.DateTime()),
    )
    op.create_index("idx_client_keys_owner", "client_keys", ["owner"])
    op.create_index("idx_client_keys_group", "client_keys", ["group_name"])
    op.create_table(
        "client_groups",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("models", sa.JSON()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "keys_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_keys_generation_single_row"),
    )
    op.execute("INSERT INTO keys_generation (id, value) VALUES (1, 0)")
    op.create_table(
        "key_usage_minutes",
        sa.Column("minute", sa.Integer(), primary_key=True),
        sa.Column(
            "key_id",
            sa.String(36),
            sa.ForeignKey("client_keys.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_counts", sa.JSON(), nullable=False),
    )
    op.create_index("idx_key_usage_minutes_minute", "key_usage_minutes", ["minute"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION bump_keys_generation() RETURNS trigger AS $$ "
            f"BEGIN {BUMP} RETURN NULL; END; $$ LANGUAGE plpgsql"
        )
        for name, event, table in TRIGGERS:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION bump_keys_generation()"
            )
    else:
        for name, event, table in TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {BUMP} END")


def downgrade() -> None:
    for name, _, table in TRIGGERS:
        if op.get_bind().dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS bump_keys_generation()")
    op.drop_table("key_usage_minutes")
    op.drop_table("keys_generation")
    op.drop_table("client_groups")
    op.drop_table("client_keys")
