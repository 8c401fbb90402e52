"""Payments are authorized, then captured once stock is reserved, or voided (ADR 0029).

A payment moves pending -> authorized -> captured (-> refunded), or authorized -> voided, or
pending -> declined. Its history gains the kinds authorize, capture and void (``charge``
stays, for the rows written before). At most one successful payment per order, whatever became
of it; at most one row of each kind per order.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = (
    "ALTER TABLE payments DROP CONSTRAINT payments_status_check",
    """ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
       ('pending','authorized','captured','declined','voided','refunded'))""",
    "DROP INDEX payments_one_capture_per_order",
    """CREATE UNIQUE INDEX payments_one_success_per_order ON payments (order_id)
       WHERE status IN ('authorized','captured','voided','refunded')""",
    "ALTER TABLE payment_transactions DROP CONSTRAINT payment_transactions_kind_check",
    """ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_kind_check CHECK
       (kind IN ('charge','authorize','capture','void','decline','refund'))""",
    """CREATE UNIQUE INDEX payment_transactions_one_authorization_per_order
       ON payment_transactions (order_id) WHERE kind = 'authorize'""",
    """CREATE UNIQUE INDEX payment_transactions_one_capture_per_order
       ON payment_transactions (order_id) WHERE kind = 'capture'""",
    """CREATE UNIQUE INDEX payment_transactions_one_void_per_order
       ON payment_transactions (order_id) WHERE kind = 'void'""",
)

DOWNGRADE = (
    "DROP INDEX payment_transactions_one_void_per_order",
    "DROP INDEX payment_transactions_one_capture_per_order",
    "DROP INDEX payment_transactions_one_authorization_per_order",
    "ALTER TABLE payment_transactions DROP CONSTRAINT payment_transactions_kind_check",
    """ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_kind_check CHECK
       (kind IN ('charge','decline','refund'))""",
    "DROP INDEX payments_one_success_per_order",
    """CREATE UNIQUE INDEX payments_one_capture_per_order ON payments (order_id)
       WHERE status IN ('captured','refunded')""",
    "ALTER TABLE payments DROP CONSTRAINT payments_status_check",
    """ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
       ('pending','captured','declined','refunded'))""",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
