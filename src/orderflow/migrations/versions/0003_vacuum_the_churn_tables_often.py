"""Have autovacuum visit the tables that churn after a fixed number of dead rows, not a share.

Every order is updated about seven times on its way to ``delivered`` (status, version), every
outbox row is updated once (published) and deleted later (pruned), payments and products'
stock change with the saga, idempotency records expire. PostgreSQL's default waits for 20 %
of a table to be dead before vacuuming it; on a table of millions of orders that is
hundreds of thousands of dead versions that every index scan of the saga steps through.
A fixed threshold keeps the dead rows bounded whatever the table's size (see ADR 0011).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHURN_TABLES = ("orders", "outbox", "payments", "products", "idempotency_keys")
_OPTIONS = (
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_analyze_scale_factor",
    "autovacuum_analyze_threshold",
)


def upgrade() -> None:
    for table in CHURN_TABLES:
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0, "
            "autovacuum_vacuum_threshold = 5000, autovacuum_analyze_scale_factor = 0, "
            "autovacuum_analyze_threshold = 5000)"
        )


def downgrade() -> None:
    for table in CHURN_TABLES:
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(_OPTIONS)})")
