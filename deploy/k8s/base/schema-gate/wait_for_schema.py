"""Wait until the database's schema is at this image's Alembic head: the pods' schema gate.

Runs as the init container of api, relay and worker (the image's own Python, no psql), so a
pod of a new release starts only once the migrate Job has upgraded the schema. It waits while
the database is unreachable, has no schema yet or is at an older revision; it lets the pod
start when the schema is at the head, or at a revision this image does not know (a newer
release migrated it: migrations are additive, so older code keeps working, e.g. on rollback).

    python wait_for_schema.py            # wait (forever; the rollout's deadline says when)
    python wait_for_schema.py --once     # check once: exit 0 ready, 1 not
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
from alembic.config import Config
from alembic.script import ScriptDirectory

import orderflow.migrations

INTERVAL_S = float(os.environ.get("SCHEMA_GATE_INTERVAL_S", "3"))


def migrations() -> ScriptDirectory:
    """The Alembic migrations packaged in this image."""
    config = Config()
    config.set_main_option("script_location", str(Path(orderflow.migrations.__file__).parent))
    return ScriptDirectory.from_config(config)


def code_heads() -> set[str]:
    """The head revisions of this image's migrations."""
    return set(migrations().get_heads())


def known_revisions() -> set[str]:
    """Every revision this image's migrations define."""
    return {script.revision for script in migrations().walk_revisions()}


async def database_revisions(dsn: str) -> set[str]:
    """The revisions recorded in the database (empty when it has no schema yet)."""
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        if await connection.fetchval("SELECT to_regclass('alembic_version')") is None:
            return set()
        rows = await connection.fetch("SELECT version_num FROM alembic_version")
        return {row["version_num"] for row in rows}
    finally:
        await connection.close()


def verdict(current: set[str], heads: set[str], known: set[str]) -> str | None:
    """None when the schema can serve this image, else why the pod must wait."""
    if current == heads:
        return None
    if current and not current & known:
        return None  # a newer release's revision: additive, this code still works
    if not current:
        return "the database has no schema yet (is the migrate Job running?)"
    return f"schema at {sorted(current)}, this image needs {sorted(heads)}"


def check(dsn: str) -> str | None:
    """One look at the database: None when ready, else the reason to wait."""
    try:
        current = asyncio.run(database_revisions(dsn))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"database unreachable: {type(exc).__name__}"
    return verdict(current, code_heads(), known_revisions())


def main(argv: list[str]) -> int:
    """Wait for the schema (or check once with --once); the exit status says whether it is there."""
    dsn = os.environ["ORDERFLOW_DATABASE_URL"]
    while True:
        reason = check(dsn)
        if reason is None:
            print(f"schema-gate: schema at head {sorted(code_heads())}", flush=True)
            return 0
        print(f"schema-gate: waiting: {reason}", flush=True)
        if "--once" in argv:
            return 1
        time.sleep(INTERVAL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
