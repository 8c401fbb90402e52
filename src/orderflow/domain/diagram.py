"""The order lifecycle as a Mermaid state diagram, generated from ``TRANSITIONS``."""

from __future__ import annotations

from orderflow.domain.events import catalogue
from orderflow.domain.orders import TERMINAL, TRANSITIONS, OrderStatus, initial_status

# Events that annotate the timeline without moving the order, and what triggers them.
COMPENSATIONS = (
    ("payment.processed_after_cancel", "an authorization on a cancelled order", "payment.voided"),
    ("order.cancelled", "after an authorization", "payment.voided"),
    ("order.cancelled", "after a capture", "payment.refunded"),
    ("order.cancelled", "after a reservation", "inventory.released"),
    ("order.paid", "when a line cannot be reserved", "inventory.insufficient, order.cancelled"),
)


def lifecycle_mermaid() -> str:
    """A ``stateDiagram-v2`` of every status and transition."""
    lines = ["stateDiagram-v2"]
    lines.append(
        f"    [*] --> {initial_status(has_payment_method=True)}: order.created (with token)"
    )
    lines.append(
        f"    [*] --> {initial_status(has_payment_method=False)}: order.created (no token)"
    )
    for status, edges in TRANSITIONS.items():
        for event, target in edges.items():
            lines.append(f"    {status} --> {target}: {event}")
    for status in OrderStatus:
        if status in TERMINAL:
            lines.append(f"    {status} --> [*]")
    return "\n".join(lines) + "\n"


def compensation_table() -> str:
    """A Markdown table of the compensations that follow a failure or a cancellation."""
    rows = ["| when | condition | then |", "|---|---|---|"]
    rows += [f"| `{when}` | {cond} | `{then}` |" for when, cond, then in COMPENSATIONS]
    return "\n".join(rows) + "\n"


def event_table() -> str:
    """A Markdown table of the event catalogue (types, versions, descriptions, fields)."""
    rows = ["| event | version | meaning | payload fields |", "|---|---|---|---|"]
    for entry in catalogue():
        fields = ", ".join(f"`{f}`" for f in entry["schema"].get("properties", {}))
        rows.append(
            f"| `{entry['type']}` | {entry['version']} | {entry['description']} | {fields} |"
        )
    return "\n".join(rows) + "\n"
