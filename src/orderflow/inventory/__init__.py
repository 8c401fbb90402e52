"""Inventory: the stock reservation and release steps of the saga. Only the entrypoints wire
it; no other capability uses it."""
