"""The schema's migrations (Alembic, over asyncpg) and the config that runs them."""

from __future__ import annotations

from pathlib import Path

MIGRATIONS = Path(__file__).parent


def alembic_config(dsn: str | None = None) -> object:
    """An Alembic config for the packaged migrations."""
    from alembic.config import Config

    from orderflow.kernel.database import sqlalchemy_url
    from orderflow.settings import get_settings

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn or get_settings().dsn()))
    return config
