"""Access: API keys and their roles, staff sessions, rate limits.

Public face: what other capabilities may use. Everything else in this package is its own.
"""

from orderflow.access.keys import create_key

__all__ = ["create_key"]
