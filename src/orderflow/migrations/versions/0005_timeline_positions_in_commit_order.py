"""Give timeline entries a position in commit order, for resumable order streams.

An entry's ``id`` is taken when its row is inserted, not when its transaction commits: an
entry committed later may have a smaller id than one a stream has already sent, and a
catch-up by "id greater than the last one seen" would skip it. ``position`` is assigned after
commit, by one sequencer at a time (``orderflow.ordering.feed_store``), so that
positions are dense and committed in their own order; streams resume by position. See ADR 0022.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE order_timeline ADD COLUMN position bigint")
    op.execute(
        "UPDATE order_timeline t SET position = n.rn FROM "
        "(SELECT id, row_number() OVER (ORDER BY id) AS rn FROM order_timeline) n "
        "WHERE t.id = n.id"
    )
    op.execute(
        "CREATE UNIQUE INDEX order_timeline_position_idx ON order_timeline (position) "
        "WHERE position IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX order_timeline_unsequenced_idx ON order_timeline (id) WHERE position IS NULL"
    )
    op.execute(
        "CREATE TABLE timeline_sequence ("
        "one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "last_position bigint NOT NULL)"
    )
    op.execute(
        "INSERT INTO timeline_sequence (last_position) "
        "SELECT coalesce(max(position), 0) FROM order_timeline"
    )


def downgrade() -> None:
    op.execute("DROP TABLE timeline_sequence")
    op.execute("DROP INDEX order_timeline_unsequenced_idx")
    op.execute("DROP INDEX order_timeline_position_idx")
    op.execute("ALTER TABLE order_timeline DROP COLUMN position")
