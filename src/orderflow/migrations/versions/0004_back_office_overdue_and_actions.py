"""The back office: which orders are overdue, and what operators did.

``order_overdue`` holds one row per order past its status's deadline (the worker's SLA
watchdog keeps it: marks late orders, clears those that moved on). ``admin_actions`` records
every action taken from the back office or its CLI (who, when, what, on which order), so an
order's page can show it beside the events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = (
    """CREATE TABLE order_overdue (
        order_id   uuid PRIMARY KEY REFERENCES orders(id) ON DELETE CASCADE,
        status     text NOT NULL,
        since      timestamptz NOT NULL,
        due_at     timestamptz NOT NULL,
        marked_at  timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX order_overdue_since_idx ON order_overdue (since, order_id)",
    """CREATE TABLE admin_actions (
        id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at         timestamptz NOT NULL DEFAULT now(),
        actor      text NOT NULL,
        action     text NOT NULL,
        order_id   uuid,
        detail     jsonb NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX admin_actions_order_idx ON admin_actions (order_id, id) "
    "WHERE order_id IS NOT NULL",
    "CREATE INDEX admin_actions_at_idx ON admin_actions (at DESC, id DESC)",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE admin_actions")
    op.execute("DROP TABLE order_overdue")
