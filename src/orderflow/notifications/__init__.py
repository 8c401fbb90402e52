"""Notifications: the notification step of the saga and the webhook subscriptions. Only the
entrypoints wire it; no other capability uses it."""
