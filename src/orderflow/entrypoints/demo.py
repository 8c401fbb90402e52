"""A demo catalogue and customer, so that a fresh ``make run`` has something to order."""

from __future__ import annotations

import uuid

from orderflow.kernel.database import create_pool
from orderflow.settings import Settings

_ITEMS = (
    "Coffee mug",
    "Tea pot",
    "Espresso cup",
    "Milk jug",
    "Pour-over kettle",
    "Grinder",
    "French press",
    "Tumbler",
    "Cold brew jar",
    "Filter papers",
)

DEMO_EMAIL = "demo@example.com"


async def seed_demo(settings: Settings, *, products: int) -> list[str]:
    """Insert demo rows that are missing; returns a line per fact worth printing."""
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for n in range(1, products + 1):
                name = f"{_ITEMS[(n - 1) % len(_ITEMS)]} #{n}"
                await conn.execute(
                    """
                    WITH p AS (
                        INSERT INTO products (id, sku, name, price, currency, stock)
                        VALUES ($1, $2, $3, $4, $5, $6)
                        ON CONFLICT (sku) DO NOTHING RETURNING id, stock
                    )
                    INSERT INTO stock_movements (product_id, kind, quantity)
                    SELECT id, 'initial', stock FROM p
                    """,
                    uuid.uuid4(),
                    f"DEMO-{n:03d}",
                    name,
                    500 + 250 * n,
                    settings.currency,
                    1000,
                )
            customer_id = await conn.fetchval(
                """
                INSERT INTO customers (id, email, name) VALUES ($1, $2, 'Demo Customer')
                ON CONFLICT (lower(email)) DO UPDATE SET name = customers.name RETURNING id
                """,
                uuid.uuid4(),
                DEMO_EMAIL,
            )
            product_id = await conn.fetchval("SELECT id FROM products WHERE sku = 'DEMO-001'")
    finally:
        await pool.close()
    return [
        f"demo catalogue: {products} products (SKU DEMO-001 ...)",
        f"demo customer: {customer_id}",
        f"demo product DEMO-001: {product_id}",
    ]
