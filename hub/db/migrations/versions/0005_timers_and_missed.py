"""timers and missed conversations

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False, unique=True),
        sa.Column(
            "conversation_id",
            BigId,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=True,
        ),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", UTCDateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_timers_due", "timers", ["status", "due_at"])
    op.create_index("ix_timers_conversation_id", "timers", ["conversation_id"])
    op.create_table(
        "missed_conversations",
        sa.Column("id", BigId, primary_key=True),
        sa.Column(
            "conversation_id",
            BigId,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("message_id", BigId, nullable=True),
        sa.Column("since", UTCDateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_missed_conversations_conversation_id", "missed_conversations", ["conversation_id"]
    )


def downgrade() -> None:
    op.drop_table("missed_conversations")
    op.drop_table("timers")
