"""messages to the other hub processes too large for NOTIFY

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "bus_spill",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_bus_spill_created_at", "bus_spill", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_bus_spill_created_at", "bus_spill")
    op.drop_table("bus_spill")
