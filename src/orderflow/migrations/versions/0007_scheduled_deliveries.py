"""Scheduled deliveries: retries and deferrals wait in PostgreSQL, not in the broker.

A worker that settles a delivery its handler did not apply yet (a transient failure, a
``Defer``) inserts one row here and acks; the relay publishes the row to its work queue once
``due_at`` has passed and deletes it in the same transaction, after the broker's confirm
(``orderflow.kernel.scheduled``, ADR 0028). The table replaces the per-handler retry and
delay queues of ADR 0023. Rows come and go all the time: autovacuum visits it after a fixed
number of dead rows, as it does the other churn tables (migration 0003).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# One statement per execute: the asyncpg driver prepares each.
UPGRADE = (
    """
CREATE TABLE scheduled_deliveries (
    id             bigserial PRIMARY KEY,
    queue          text NOT NULL,
    reason         text NOT NULL CHECK (reason IN ('retry', 'defer')),
    body           bytea NOT NULL,
    message_id     text,
    event_type     text,
    content_type   text,
    correlation_id text,
    headers        jsonb NOT NULL DEFAULT '{}',
    due_at         timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
)
""",
    """
CREATE INDEX scheduled_deliveries_due_at_idx ON scheduled_deliveries (due_at)
""",
    """
ALTER TABLE scheduled_deliveries SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 5000, autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000)
""",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE scheduled_deliveries")
