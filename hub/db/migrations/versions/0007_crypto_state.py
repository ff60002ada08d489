"""end-to-bridge encryption state

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 04:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crypto_state",
        sa.Column("namespace", sa.String(length=32), primary_key=True),
        sa.Column("key", sa.String(length=600), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("crypto_state")
