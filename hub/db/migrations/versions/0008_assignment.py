"""assignment of conversations, advisers' availability, the hub's own state

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("assignee", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("assigned_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="open")
        )
        batch.add_column(sa.Column("closed_at", UTCDateTime(timezone=True), nullable=True))
    op.create_index("ix_conversations_status_assignee", "conversations", ["status", "assignee"])
    op.create_table(
        "adviser_status",
        sa.Column("mxid", sa.String(length=255), primary_key=True),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("last_assigned_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "hub_state",
        sa.Column("key", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hub_state")
    op.drop_table("adviser_status")
    op.drop_index("ix_conversations_status_assignee", "conversations")
    with op.batch_alter_table("conversations") as batch:
        for column in ("closed_at", "status", "assigned_at", "assignee"):
            batch.drop_column(column)
