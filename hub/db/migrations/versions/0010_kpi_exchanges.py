"""the KPIs' exchanges and inbound spans, backfilled from the messages

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 09:00:00

From now on hub.db.exchanges writes these rows with each message; the backfill computes the
same rows once from the messages stored before, in SQL on both engines (the window functions
the KPI query ran on every report until 0009). Its SQL is kept here, frozen with the schema
it was written for; tests/integration/test_kpi.py checks it against the bookkeeping.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from hub.db.models import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GAP_SECONDS = 24 * 3600  # hub.kpi.compute.EXCHANGE_GAP_SECONDS when this was written
SPAN_SECONDS = 43200


def _epoch(dialect: str, column: str) -> str:
    if dialect == "sqlite":
        return f"unixepoch({column})"
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {column})) AS BIGINT)"


def backfill_sql(dialect: str) -> list[str]:
    """The statements that write the exchanges and inbound spans of the stored messages (on
    empty tables). An exchange: a customer message whose previous customer or adviser
    message (by id; bot messages have no sender_mxid) is missing or more than a day older;
    its answer: the first adviser message after it."""
    t = _epoch(dialect, "m.created_at")
    exchanges = f"""
        INSERT INTO exchanges
            (message_id, conversation_id, channel, started_at, first_reply_at, first_reply_by)
        SELECT r.id, r.cid, r.ch, r.at, x.created_at, x.sender_mxid
        FROM (
            SELECT m.id, m.conversation_id AS cid, m.channel AS ch, m.direction AS dir,
                m.created_at AS at, {t} AS t,
                LAG({t}) OVER (PARTITION BY m.conversation_id ORDER BY m.id) AS prev_t,
                MIN(CASE WHEN m.direction = 'out' THEN m.id END) OVER (
                    PARTITION BY m.conversation_id ORDER BY m.id DESC
                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
                ) AS reply_id
            FROM messages m
            WHERE m.direction = 'in' OR m.sender_mxid IS NOT NULL
        ) r
        LEFT JOIN messages x ON x.id = r.reply_id
        WHERE r.dir = 'in' AND (r.prev_t IS NULL OR r.prev_t < r.t - {GAP_SECONDS})"""
    spans = f"""
        INSERT INTO inbound_spans (bucket, conversation_id, channel, first_at, last_at)
        SELECT {t} / {SPAN_SECONDS}, m.conversation_id, MIN(m.channel), MIN(m.created_at),
            MAX(m.created_at)
        FROM messages m
        WHERE m.direction = 'in'
        GROUP BY {t} / {SPAN_SECONDS}, m.conversation_id"""
    return [exchanges, spans]


def backfill(conn: sa.Connection) -> None:
    for sql in backfill_sql(conn.dialect.name):
        conn.execute(sa.text(sql))


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("message_id", BigId, primary_key=True),
        sa.Column(
            "conversation_id",
            BigId,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("first_reply_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("first_reply_by", sa.String(length=255), nullable=True),
    )
    op.create_index("ix_exchanges_started_at", "exchanges", ["started_at"])
    op.create_index("ix_exchanges_conversation", "exchanges", ["conversation_id", "first_reply_at"])
    op.create_table(
        "inbound_spans",
        sa.Column("bucket", sa.Integer(), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.BigInteger(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("first_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", UTCDateTime(timezone=True), nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_inbound_spans_conversation", "inbound_spans", ["conversation_id"])
    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("inbound_spans")
    op.drop_table("exchanges")
