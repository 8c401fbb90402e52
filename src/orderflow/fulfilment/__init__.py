"""Fulfilment: preparation, shipping and delivery, by staff or by the autopilot. Only the
entrypoints wire it; no other capability uses it."""
