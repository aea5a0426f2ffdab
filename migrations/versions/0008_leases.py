"""leases: a registration held by a host's open connection

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23

A host that joins with `gateway-admin join` holds a lease: an SSE response of
`POST /admin/leases` kept open. The gateway process holding it renews
`lease_expires_at` at every heartbeat; when the stream ends the registration
stays routable for LEASE_GRACE_SECONDS, then healthd deactivates it (soft).
The expiry lives here, so a lease whose gateway process died expires all the
same, and any worker or a restarted gateway sees the same state.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_servers", sa.Column("lease_connected_at", sa.DateTime()))
    op.add_column("model_servers", sa.Column("lease_heartbeat_at", sa.DateTime()))
    op.add_column("model_servers", sa.Column("lease_expires_at", sa.DateTime()))
    op.create_index("idx_model_servers_lease_expires_at", "model_servers", ["lease_expires_at"])


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.drop_index("idx_model_servers_lease_expires_at", "model_servers")
    for column in ("lease_expires_at", "lease_heartbeat_at", "lease_connected_at"):
        if sqlite:
            # SQLite drops a column in place since 3.35: the table (and triggers) stay.
            op.execute(f"ALTER TABLE model_servers DROP COLUMN {column}")
        else:
            op.drop_column("model_servers", column)
