"""``orderflow audit``: check the invariants over the database and print every violation."""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import typer

from orderflow.operations import audit_gateway_ledger
from orderflow.operations.audit import AuditReport, run_audit
from orderflow.settings import Settings, get_settings


def audit(
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="seconds an order may take to reach a terminal state "
            "(one awaiting payment: on top of the unpaid-order TTL)",
        ),
    ] = 60.0,
    page_size: Annotated[int, typer.Option(min=1, max=10_000, help="orders per read")] = 500,
    json_output: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    gateway: Annotated[
        bool,
        typer.Option(
            "--gateway",
            help="also compare our payments with the payment gateway's own ledger "
            "(ORDERFLOW_GATEWAY_URL), movement by movement",
        ),
    ] = False,
) -> None:
    """Check the invariants over the database; exit 1 if any is broken."""
    from orderflow.observability.logging import configure_logging

    settings = get_settings()
    configure_logging(settings, process="audit")
    report = asyncio.run(
        audit_database(settings, grace_s=grace, page_size=page_size, gateway=gateway)
    )
    if json_output:
        import orjson

        doc = {
            "ok": report.ok,
            "orders": report.orders,
            "products": report.products,
            "counts": report.counts(),
            "violations": [v.as_dict() for v in report.violations],
        }
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    else:
        for v in report.violations:
            subject = f"order {v.order_id}" if v.order_id else f"product {v.product_id}"
            typer.echo(f"{v.check.value:<18} {subject}: {v.detail}")
        verdict = "ok" if report.ok else f"{len(report.violations)} violation(s)"
        typer.echo(f"audited {report.orders} orders, {report.products} products: {verdict}")
    if not report.ok:
        raise typer.Exit(1)


async def audit_database(
    settings: Settings, *, grace_s: float, page_size: int = 500, gateway: bool = False
) -> AuditReport:
    """Open a small pool, run the audit (and, with ``gateway``, the comparison with the
    payment gateway's ledger), close the pool."""
    from orderflow.kernel.database import create_pool

    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        report = await run_audit(
            pool,
            grace_s=grace_s,
            unpaid_ttl_s=settings.unpaid_order_ttl_s,
            page_size=page_size,
        )
        if gateway:
            key = settings.gateway_api_key.get_secret_value()
            async with httpx.AsyncClient(
                base_url=settings.gateway_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            ) as client:
                report.violations += await audit_gateway_ledger(pool, client)
        return report
    finally:
        await pool.close()
