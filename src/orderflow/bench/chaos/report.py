"""A chaos run's verdict and how it is shown: the invariant figures (each must be 0), a table
for people, a JSON document for machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

# (section, key, what it counts): every one of them must be 0.
INVARIANTS: tuple[tuple[str, str, str], ...] = (
    ("orders", "lost", "accepted orders (2xx) not in the database"),
    ("orders", "not_terminal", "accepted orders not delivered or cancelled after recovery"),
    ("orders", "unresolved_placements", "placements still unanswered after their replays"),
    ("duplicates", "authorizations", "second authorizations of one order (payment_transactions)"),
    ("duplicates", "charges", "second captures of one order (payment_transactions)"),
    ("duplicates", "refunds", "second refunds of one order"),
    ("duplicates", "voids", "second voids of one order"),
    ("duplicates", "stock_movements", "second stock movements of one kind, order and product"),
    ("duplicates", "notifications", "second notifications per (order, event, recipient)"),
    ("duplicates", "events_applied_twice", "once-per-order events on a timeline twice"),
    ("gateway", "captures_twice", "second captures of one order in the gateway's own ledger"),
    ("gateway", "refunds_twice", "second refunds of one order in the gateway's ledger"),
    ("gateway", "voids_twice", "second voids of one order in the gateway's ledger"),
    ("gateway", "ledgers_differ", "orders whose gateway movements differ from our payments"),
    ("gateway", "captured_short_of_stock", "orders short of stock captured at the gateway"),
)


def document(figures: dict[str, Any]) -> dict[str, Any]:
    """The run's figures with the verdict: every invariant figure, the failed ones, ok."""
    invariants = {
        f"{section}.{key}": int(figures.get(section, {}).get(key, 0))
        for section, key, _ in INVARIANTS
    }
    invariants["faults_not_injected"] = sum(1 for f in figures["faults"] if f["error"])
    broken = [name for name, value in invariants.items() if value]
    if not figures["audit"]["ok"]:
        broken.append("audit")
    return {**figures, "invariants": invariants, "broken": broken, "ok": not broken}


def print_report(console: Console, doc: dict[str, Any]) -> None:
    """The run as tables: requests, invariants, faults, the audit's verdict."""
    requests = Table(title="Requests", title_justify="left")
    for column in ("kind", "ok", "failed", "indeterminate", "failed by status"):
        requests.add_column(column, justify="left" if column == "kind" else "right")
    for kind, row in sorted(doc["requests"].items()):
        statuses = ", ".join(
            f"{k.removeprefix('status_')}: {v}" for k, v in sorted(row.items()) if "_" in k
        )
        requests.add_row(
            kind, str(row["ok"]), str(row["failed"]), str(row["indeterminate"]), statuses
        )
    console.print(requests)

    orders = doc["orders"]
    console.print(
        f"placed {doc['placed']}, accepted {orders['accepted']} "
        f"({orders['accepted_by_replay']} by a replay of their key), "
        f"{orders['short_of_stock']} short of stock; by status {orders['by_status']}"
    )
    invariants = Table(title="Invariants (each must be 0)", title_justify="left")
    invariants.add_column("figure")
    invariants.add_column("value", justify="right")
    invariants.add_column("what")
    described = {f"{s}.{k}": what for s, k, what in INVARIANTS}
    described["faults_not_injected"] = "faults that failed to inject or to bring back"
    for name, value in doc["invariants"].items():
        style = "red" if value else "green"
        invariants.add_row(name, f"[{style}]{value}[/{style}]", described[name])
    console.print(invariants)

    faults = Table(title="Faults (seconds; recovery counted from the end of the fault)")
    for column in (
        "fault",
        "at",
        "down",
        "back",
        "placements failed",
        "indeterminate",
        "first order placed",
        "first order moved",
    ):
        faults.add_column(column, justify="left" if column == "fault" else "right")
    for f in doc["faults"]:
        faults.add_row(
            f["fault"] + (" [red](error)[/red]" if f["error"] else ""),
            f"{f['at_s']:.1f}",
            f"{f['down_s']:.1f}",
            f"{f['back_s']:.1f}",
            str(f["placements_failed"]),
            str(f["placements_indeterminate"]),
            _seconds(f["recover_placement_s"]),
            _seconds(f["recover_progress_s"]),
        )
    console.print(faults)
    recovery = doc["recovery"]
    console.print(
        f"recovery after the load: {recovery['waited_s']} s until every order ended, "
        f"{recovery.get('orders_redriven', 0)} re-drives by the reconciler"
    )
    if doc["unplanned_exits"]:
        console.print(f"[red]processes that exited on their own: {doc['unplanned_exits']}[/red]")
    audit = doc["audit"]
    verdict = "clean" if audit["ok"] else f"[red]violations {audit['counts']}[/red]"
    console.print(f"audit over {audit['orders']} orders: {verdict}")
    if doc["ok"]:
        console.print("[bold green]chaos: every invariant held[/bold green]")
    else:
        console.print(f"[bold red]chaos: broken: {', '.join(doc['broken'])}[/bold red]")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` (indented)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
