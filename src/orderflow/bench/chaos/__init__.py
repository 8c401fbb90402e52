"""``orderflow chaos``: the fault suite. It starts the system as processes it can kill, places
orders at a steady rate while it kills processes and restarts the shared services, and reports
what the faults cost: orders lost, effects duplicated, time to recover (docs/reliability.md)."""
