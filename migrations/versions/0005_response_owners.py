"""response owners: which backend made each Responses API response

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

A Responses API conversation lives on the backend that made it: a request
with `previous_response_id`, and `GET/DELETE /v1/responses/{id}`, must go
there. Each gateway process remembers the ids it saw in memory and writes them
here in its usage batches, so another worker, or the same one after a
restart, finds the owner with one read.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "response_owners",
        sa.Column("response_id", sa.String(256), primary_key=True),
        sa.Column(
            "server_id",
            sa.String(36),
            sa.ForeignKey("model_servers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("idx_response_owners_created_at", "response_owners", ["created_at"])


def downgrade() -> None:
    op.drop_index("idx_response_owners_created_at", "response_owners")
    op.drop_table("response_owners")
