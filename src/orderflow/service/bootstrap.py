"""Wiring: builds the saga's handler registry from the adapters a process opened."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from orderflow.service.registry import Registry
from orderflow.settings import Settings


@dataclass
class Deps:
    """What handlers need besides their unit of work; opened by the worker's start-up."""

    settings: Settings
    pool: asyncpg.Pool


def build_registry(deps: Deps) -> Registry:
    """Every saga handler, bound to ``deps``. (The saga issue fills this in.)"""
    return Registry()
