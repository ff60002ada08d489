"""photo consent, newsletter opt-in, broadcasts, erasures

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 00:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _at(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def _ref(name: str, target: str, nullable: bool = False, unique: bool = False) -> sa.Column[int]:
    return sa.Column(
        name, BigId, sa.ForeignKey(target, ondelete="CASCADE"), nullable=nullable, unique=unique
    )


def upgrade() -> None:
    op.create_table(
        "consent_requests",
        sa.Column("id", BigId, primary_key=True),
        _ref("conversation_id", "conversations.id"),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_version", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=False),
        sa.Column("request_message_id", BigId, nullable=True),
        _at("requested_at", nullable=False),
        _at("expires_at", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        _at("answered_at"),
        sa.Column("answer_message_id", BigId, nullable=True),
        sa.Column("answer_remote_id", sa.String(length=255), nullable=True),
        sa.Column("answer_late", sa.Boolean(), nullable=False),
        _at("revoked_at"),
        sa.Column("revoked_by", sa.String(length=255), nullable=True),
        sa.Column("revoke_message_id", BigId, nullable=True),
    )
    op.create_index("ix_consent_requests_conversation_id", "consent_requests", ["conversation_id"])
    op.create_table(
        "consent_images",
        sa.Column("id", BigId, primary_key=True),
        _ref("request_id", "consent_requests.id"),
        _ref("message_id", "messages.id", unique=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        _at("deleted_at"),
    )
    op.create_index("ix_consent_images_request_id", "consent_images", ["request_id"])
    op.create_table(
        "newsletter_optins",
        sa.Column("id", BigId, primary_key=True),
        _ref("identity_id", "channel_identities.id", unique=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("text_version", sa.String(length=64), nullable=False),
        sa.Column("requested_by", sa.String(length=255), nullable=True),
        _at("requested_at", nullable=False),
        _at("expires_at"),
        _at("first_confirmed_at"),
        sa.Column("first_confirm_remote_id", sa.String(length=255), nullable=True),
        _at("confirmed_at"),
        sa.Column("confirm_remote_id", sa.String(length=255), nullable=True),
        _at("opted_out_at"),
        sa.Column("opt_out_remote_id", sa.String(length=255), nullable=True),
        _at("updated_at", nullable=False),
    )
    op.create_table(
        "broadcast_recipients",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("broadcast", sa.String(length=64), nullable=False),
        sa.Column("template", sa.String(length=255), nullable=False),
        _ref("identity_id", "channel_identities.id"),
        sa.Column("message_id", BigId, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        _at("created_at", nullable=False),
        sa.UniqueConstraint("broadcast", "identity_id"),
    )
    op.create_index("ix_broadcast_recipients_broadcast", "broadcast_recipients", ["broadcast"])
    op.create_index("ix_broadcast_recipients_identity_id", "broadcast_recipients", ["identity_id"])
    op.create_table(
        "erasures",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        _at("erased_at", nullable=False),
    )


def downgrade() -> None:
    for name in (
        "erasures",
        "broadcast_recipients",
        "newsletter_optins",
        "consent_images",
        "consent_requests",
    ):
        op.drop_table(name)
