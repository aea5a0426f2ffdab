"""answers naming another model, counted per server and model

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04

- `model_servers.model_mismatches` (model → how many answers named a model, how
  many another one, the last other name, whether that made it suspect). The
  gateway writes it off the request path; past MODEL_MISMATCH_THRESHOLD it puts
  the model in `model_faults` (a routing column: the triggers already bump the
  generation), and healthd clears both when the model's canary passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "model_servers",
        sa.Column("model_mismatches", sa.JSON(), nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE model_servers DROP COLUMN model_mismatches")
