"""Wake relays from the writers, not from a trigger: NOTIFY serialises commits.

A transaction that has sent NOTIFY takes one database-wide lock at commit and holds it
through its WAL flush, so every transaction that wrote an outbox row waited for every other
one's flush (``wait_event = 'object'``). The writers now signal relays after they commit,
coalesced per process (``orderflow.kernel.outbox.wake_relays``); see ADR 0007.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER outbox_notify ON outbox")
    op.execute("DROP FUNCTION outbox_notify()")


def downgrade() -> None:
    op.execute(
        """CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderflow_outbox', '');
    RETURN NULL;
END $$"""
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()"
    )
