"""orderflow: an event-driven, real-time order processing backend."""

__version__ = "0.1.0"
