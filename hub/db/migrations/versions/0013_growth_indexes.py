"""indexes a big shop needs (issue 16, bench/growth.py)

- channel_identities.customer_id: a customer's conversations are found through it
  (hub.db.context.customer_facts, for the context notice every new portal gets and for
  !context; hub.db.gdpr's export and erasure). Without it each of those read every identity:
  5.7 ms on SQLite and a sequential scan on PostgreSQL with 100 000 customers, for every new
  conversation.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 08:10:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEXES = (("ix_channel_identities_customer_id", "channel_identities", ["customer_id"]),)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
