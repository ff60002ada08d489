"""the dashboard's logins, shared by every hub process on the database

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 07:00:00

Until now the logins were held in the memory of the one process that served the dashboard;
with several processes behind one proxy, a login must be known to all of them. `id` is the
SHA-256 of the session's token, never the token. Nothing to carry over: the logins in
memory end with the restart that runs this migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("csrf", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_dashboard_sessions_last_seen_at", "dashboard_sessions", ["last_seen_at"])
    op.create_index(
        "ix_dashboard_sessions_username", "dashboard_sessions", ["username", "last_seen_at"]
    )


def downgrade() -> None:
    op.drop_table("dashboard_sessions")
