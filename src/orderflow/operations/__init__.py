"""Operations: the back office's reads and actions, the watchdogs (SLA, stuck orders,
reconciler), dead letters and the invariant audit.

Public face: what other packages below the entrypoints may use.
"""

from orderflow.operations.audit import run_audit
from orderflow.operations.gateway_ledger import audit_gateway_ledger, gateway_counts
from orderflow.operations.invariants import ONCE_PER_ORDER, Check

__all__ = ["ONCE_PER_ORDER", "Check", "audit_gateway_ledger", "gateway_counts", "run_audit"]
