"""indexes of the KPI queries

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 05:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

INDEXES = (
    (
        "ix_messages_kpi",
        "messages",
        ["created_at", "direction", "conversation_id", "channel", "sender_mxid"],
    ),
    ("ix_conversations_created_at", "conversations", ["created_at"]),
    ("ix_missed_conversations_since", "missed_conversations", ["since"]),
    ("ix_short_links_created_at", "short_links", ["created_at"]),
    ("ix_orders_created_at", "orders", ["created_at"]),
    ("ix_orders_paid_at", "orders", ["paid_at"]),
    ("ix_consent_requests_requested_at", "consent_requests", ["requested_at"]),
    ("ix_newsletter_optins_requested_at", "newsletter_optins", ["requested_at"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
