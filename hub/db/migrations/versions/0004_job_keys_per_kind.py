"""job idempotency keys namespaced per kind

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 21:00:00

The queue stores "<kind>/<key>" (hub.db.jobs): the column grows so that a Matrix event id
(up to 255 bytes) still fits behind its kind. Keys of jobs stored before keep their old
form; they only guarded against queueing the same thing twice, which every handler also
checks by its own ids (event ids, message ids).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=255),
            type_=sa.String(length=400),
            existing_nullable=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column(
            "idempotency_key",
            existing_type=sa.String(length=400),
            type_=sa.String(length=255),
            existing_nullable=False,
        )
