"""Initial schema: catalogue, customers, keys, orders, payments, stock, timeline, outbox, inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import re

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = (
    "'created','awaiting_payment','payment_pending','paid','reserved',"
    "'prepared','shipped','delivered','cancelled'"
)

UPGRADE = f"""
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE customers (
    id          uuid PRIMARY KEY,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_key ON customers (lower(email));

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    prefix       text NOT NULL UNIQUE,
    key_hash     bytea NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin','staff','customer')),
    customer_id  uuid REFERENCES customers(id) ON DELETE CASCADE,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CHECK ((role = 'customer') = (customer_id IS NOT NULL))
);

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    sku         text NOT NULL UNIQUE CHECK (length(sku) BETWEEN 1 AND 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    price       bigint NOT NULL CHECK (price >= 0),
    currency    char(3) NOT NULL,
    stock       integer NOT NULL CHECK (stock >= 0),
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_price_idx ON products (price, id);
CREATE INDEX products_created_idx ON products (created_at, id);
CREATE INDEX products_name_trgm_idx ON products USING gin (name gin_trgm_ops);

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    customer_id      uuid NOT NULL REFERENCES customers(id),
    status           text NOT NULL CHECK (status IN ({STATUSES})),
    currency         char(3) NOT NULL,
    subtotal         bigint NOT NULL CHECK (subtotal >= 0),
    discount         bigint NOT NULL CHECK (discount >= 0),
    tax              bigint NOT NULL CHECK (tax >= 0),
    total            bigint NOT NULL CHECK (total >= 0),
    pricing          text NOT NULL,
    payment_token    text,
    cancel_reason    text,
    version          integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (total = subtotal - discount + tax),
    CHECK ((status = 'cancelled') = (cancel_reason IS NOT NULL))
);
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);

CREATE TABLE order_lines (
    order_id    uuid NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    line_no     smallint NOT NULL CHECK (line_no >= 1),
    product_id  uuid NOT NULL REFERENCES products(id) ON DELETE RESTRICT,
    sku         text NOT NULL,
    name        text NOT NULL,
    unit_price  bigint NOT NULL CHECK (unit_price >= 0),
    quantity    integer NOT NULL CHECK (quantity > 0),
    line_total  bigint NOT NULL CHECK (line_total = unit_price * quantity),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, product_id)
);
CREATE INDEX order_lines_product_idx ON order_lines (product_id);

CREATE TABLE payments (
    id               uuid PRIMARY KEY,
    order_id         uuid NOT NULL REFERENCES orders(id),
    attempt          integer NOT NULL CHECK (attempt >= 1),
    payment_token    text NOT NULL,
    amount           bigint NOT NULL CHECK (amount >= 0),
    currency         char(3) NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending','captured','declined','refunded')),
    gateway_reference text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, attempt)
);
-- Invariant 5: at most one captured (or later refunded) payment per order.
CREATE UNIQUE INDEX payments_one_capture_per_order
    ON payments (order_id) WHERE status IN ('captured','refunded');

CREATE TABLE payment_transactions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id       uuid NOT NULL REFERENCES payments(id),
    order_id         uuid NOT NULL REFERENCES orders(id),
    kind             text NOT NULL CHECK (kind IN ('charge','decline','refund')),
    amount           bigint NOT NULL CHECK (amount >= 0),
    currency         char(3) NOT NULL,
    idempotency_key  text NOT NULL UNIQUE,
    gateway_reference text,
    detail           text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_transactions_order_idx ON payment_transactions (order_id, id);
CREATE UNIQUE INDEX payment_transactions_one_charge_per_order
    ON payment_transactions (order_id) WHERE kind = 'charge';
CREATE UNIQUE INDEX payment_transactions_one_refund_per_order
    ON payment_transactions (order_id) WHERE kind = 'refund';

CREATE TABLE stock_movements (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id  uuid NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    order_id    uuid REFERENCES orders(id),
    kind        text NOT NULL CHECK (kind IN ('initial','restock','adjust','reserve','release')),
    quantity    integer NOT NULL CHECK (quantity <> 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind IN ('reserve','release')) = (order_id IS NOT NULL)),
    CHECK (kind <> 'reserve' OR quantity < 0),
    CHECK (kind <> 'release' OR quantity > 0)
);
CREATE INDEX stock_movements_product_idx ON stock_movements (product_id, id);
-- An order reserves and releases each product at most once.
CREATE UNIQUE INDEX stock_movements_once_per_order
    ON stock_movements (order_id, product_id, kind) WHERE order_id IS NOT NULL;

CREATE TABLE order_timeline (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    event_id     uuid NOT NULL UNIQUE,
    event_type   text NOT NULL,
    actor        text NOT NULL,
    status_after text NOT NULL CHECK (status_after IN ({STATUSES})),
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    data         jsonb NOT NULL DEFAULT '{{}}'
);
CREATE INDEX order_timeline_order_idx ON order_timeline (order_id, id);

CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    event_type    text NOT NULL,
    order_id      uuid,
    envelope      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wake relays as soon as a transaction that wrote events commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orderflow_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    event_id      uuid NOT NULL,
    handler       text NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, handler)
);

CREATE TABLE idempotency_keys (
    scope          text NOT NULL,
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash   bytea NOT NULL,
    status_code    smallint,
    response_body  bytea,
    response_headers jsonb NOT NULL DEFAULT '{{}}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_expiry_idx ON idempotency_keys (expires_at);

CREATE TABLE notifications (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id    uuid REFERENCES orders(id) ON DELETE CASCADE,
    event_id    uuid NOT NULL,
    recipient   text NOT NULL CHECK (recipient IN ('customer','supplier','carrier','warehouse')),
    channel     text NOT NULL,
    subject     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    UNIQUE (event_id, recipient)
);
CREATE INDEX notifications_order_idx ON notifications (order_id, id);
"""

DOWNGRADE = """
DROP TABLE notifications;
DROP TABLE idempotency_keys;
DROP TABLE inbox;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
DROP TABLE order_timeline;
DROP TABLE stock_movements;
DROP TABLE payment_transactions;
DROP TABLE payments;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE products;
DROP TABLE api_keys;
DROP TABLE customers;
"""


def _statements(script: str) -> list[str]:
    # One statement per execute: the asyncpg driver prepares each, and a prepared statement
    # holds one command. Statements start at column 0; function bodies are indented.
    parts = re.split(r";\s*\n(?=CREATE|DROP|--)", script.strip())
    return [part.strip().rstrip(";") for part in parts if part.strip()]


def upgrade() -> None:
    for statement in _statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(DOWNGRADE):
        op.execute(statement)
