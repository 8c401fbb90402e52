"""Payments: payment attempts, the charge and refund steps of the saga, the gateway port and
its simulator. Only the entrypoints wire it; no other capability uses it."""
