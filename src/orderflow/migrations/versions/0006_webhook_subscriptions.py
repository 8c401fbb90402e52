"""Webhook subscriptions, their deliveries and every attempt to deliver them.

Deliveries are made from the order feed (migration 0005) by the workers: ``webhook_cursor``
is how far into the feed deliveries were created; each delivery is sent, retried and
recorded until its receiver accepts it (``orderflow.notifications.webhooks``, ADR 0024).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# One statement per execute: the asyncpg driver prepares each.
UPGRADE = (
    """
CREATE TABLE webhook_subscriptions (
    id             uuid PRIMARY KEY,
    url            text NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    customer_id    uuid REFERENCES customers(id) ON DELETE CASCADE,
    partner        text CHECK (partner IN ('warehouse','carrier','supplier','other')),
    event_types    text[] NOT NULL DEFAULT '{}',
    description    text NOT NULL DEFAULT '',
    secret         text NOT NULL,
    previous_secret text,
    previous_secret_until timestamptz,
    enabled        boolean NOT NULL DEFAULT true,
    disabled_reason text,
    failure_streak integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_id IS NULL) <> (partner IS NULL))
)
""",
    """
CREATE INDEX webhook_subscriptions_customer_idx ON webhook_subscriptions (customer_id)
""",
    """
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions(id) ON DELETE CASCADE,
    order_id        uuid NOT NULL,
    position        bigint NOT NULL,
    entry_id        bigint NOT NULL,
    event_type      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending','delivered','refused')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (subscription_id, entry_id)
)
""",
    """
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending'
""",
    """
CREATE INDEX webhook_deliveries_queue_idx
    ON webhook_deliveries (subscription_id, order_id, position) WHERE status = 'pending'
""",
    """
CREATE INDEX webhook_deliveries_subscription_idx
    ON webhook_deliveries (subscription_id, created_at DESC)
""",
    """
CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries(id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    latency_ms   integer NOT NULL,
    error        text,
    response_excerpt text NOT NULL DEFAULT ''
)
""",
    """
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id)
""",
    """
CREATE TABLE webhook_cursor (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    position  bigint NOT NULL
)
""",
    """
INSERT INTO webhook_cursor (position) SELECT last_position FROM timeline_sequence
""",
)

DOWNGRADE = (
    "DROP TABLE webhook_cursor",
    "DROP TABLE webhook_attempts",
    "DROP TABLE webhook_deliveries",
    "DROP TABLE webhook_subscriptions",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
