"""PostgreSQL's change triggers (with NOTIFY), and one heartbeat row per healthd

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04

- On PostgreSQL, the registry's generation is bumped by PL/pgSQL triggers on
  `model_servers` (insert, delete, update of `shared.models.ROUTING_COLUMNS`),
  as SQLite's triggers do, and each bump also sends `NOTIFY registry_changed`,
  so every gateway instance LISTENing reloads at once (the generation poll
  stays as the fallback). The triggers are deferred to the commit: the
  generation row, which every registry write updates, is locked only for the
  last moment of a transaction, after its other rows.
- `healthd_heartbeat` gets one row per healthd instance (`instance`, e.g.
  "host:pid") with its `role`: `active` (the one that probes and writes) or
  `standby` (waits for the active one's lock). The row of a single healthd from
  before is the active one.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.models import ROUTING_COLUMNS

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "registry_changed"  # shared.db.REGISTRY_CHANNEL
TRIGGER = "model_servers_bumps_generation"
CLAIMS_TRIGGER = "model_claims_bumps_generation"


def upgrade() -> None:
    op.add_column("healthd_heartbeat", sa.Column("instance", sa.String(128)))
    op.add_column("healthd_heartbeat", sa.Column("role", sa.String(16)))
    op.execute("UPDATE healthd_heartbeat SET role = 'active', instance = 'healthd'")
    op.create_index(
        "idx_healthd_heartbeat_instance", "healthd_heartbeat", ["instance"], unique=True
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "CREATE FUNCTION bump_registry_generation() RETURNS trigger AS $$ BEGIN "
        "UPDATE registry_generation SET value = value + 1 WHERE id = 1; "
        f"PERFORM pg_notify('{CHANNEL}', ''); "
        "RETURN NULL; END; $$ LANGUAGE plpgsql"
    )
    op.execute(
        f"CREATE CONSTRAINT TRIGGER {TRIGGER} "
        f"AFTER INSERT OR DELETE OR UPDATE OF {', '.join(ROUTING_COLUMNS)} ON model_servers "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_registry_generation()"
    )
    # Owned model names (0013) route too: a claim, a co-host or an opening.
    op.execute(
        f"CREATE CONSTRAINT TRIGGER {CLAIMS_TRIGGER} "
        "AFTER INSERT OR DELETE OR UPDATE ON model_claims "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_registry_generation()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {CLAIMS_TRIGGER} ON model_claims")
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON model_servers")
        op.execute("DROP FUNCTION IF EXISTS bump_registry_generation()")
    op.drop_index("idx_healthd_heartbeat_instance", "healthd_heartbeat")
    op.drop_column("healthd_heartbeat", "role")
    op.drop_column("healthd_heartbeat", "instance")
