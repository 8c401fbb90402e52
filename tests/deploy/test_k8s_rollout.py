"""Rollouts wait for the schema: api, relay and worker pods start only once it is at head.

The gate is an init container running deploy/k8s/base/schema-gate/wait_for_schema.py with the
image's Python; here it runs against the real PostgreSQL, at each stage of a migration.
"""

from __future__ import annotations

import os
import subprocess
import sys

import asyncpg
import pytest

from orderflow.kernel.database import drop_database, ensure_database, with_database
from orderflow.settings import Settings
from tests.conftest import RUN_ID, migrate
from tests.deploy.support import K8S, OVERLAYS, by_kind, pod_spec, render

GATE = K8S / "base" / "schema-gate" / "wait_for_schema.py"
GATE_MOUNT = "/opt/schema-gate"
# The payment gateway creates its own schema (`gateway`) at start: it waits for no migration.
OWN_SCHEMA = {"gateway"}


def gate_passes(dsn: str) -> bool:
    """One run of the gate (--once) against ``dsn``: True when it would let the pod start."""
    env = {**os.environ, "ORDERFLOW_DATABASE_URL": dsn}
    result = subprocess.run(
        [sys.executable, str(GATE), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_of_the_app_image_waits_for_the_schema(overlay: str) -> None:
    manifests = render(f"overlays/{overlay}")
    (migrate_job,) = by_kind(manifests, "Job").values()
    image = pod_spec(migrate_job)["containers"][0]["image"]
    gate_maps = [n for n in by_kind(manifests, "ConfigMap") if n.startswith("schema-gate")]
    gated = set()
    for name, deployment in by_kind(manifests, "Deployment").items():
        spec = pod_spec(deployment)
        if all(c["image"] != image for c in spec["containers"]):
            continue  # Prometheus, Grafana, Alertmanager: no schema to wait for
        if name in OWN_SCHEMA:
            assert "initContainers" not in spec, f"{name} need not wait for the migrate Job"
            continue
        first, *_ = spec.get("initContainers", [{}])
        assert first.get("name") == "schema-gate", f"{name} starts without the schema gate"
        assert first["image"] == image, f"{name}'s gate runs another release's migrations"
        assert first["command"] == ["python", f"{GATE_MOUNT}/{GATE.name}"], name
        assert {e["name"] for e in first["env"]} == {"ORDERFLOW_DATABASE_URL"}, name
        (mount,) = first["volumeMounts"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert mount["mountPath"] == GATE_MOUNT
        assert volumes[mount["name"]]["configMap"]["name"] in gate_maps, name
        gated.add(name)
    assert gated == {"api", "relay", "worker"}


def test_the_gate_script_is_the_one_the_config_map_ships() -> None:
    (config_map,) = [
        m for n, m in by_kind(render("base"), "ConfigMap").items() if n.startswith("schema-gate")
    ]
    assert config_map["data"] == {GATE.name: GATE.read_text()}


async def test_the_gate_opens_only_when_the_schema_is_at_head(settings: Settings) -> None:
    dsn = with_database(settings.dsn(), f"orderflow_gate_{RUN_ID}")
    assert not gate_passes(dsn), "the database does not even exist"
    await ensure_database(dsn)
    try:
        assert not gate_passes(dsn), "no schema yet"
        await migrate(dsn, "0005")
        assert not gate_passes(dsn), "an older revision"
        await migrate(dsn)
        assert gate_passes(dsn), "the schema is at head"
        connection = await asyncpg.connect(dsn)
        try:  # a newer release migrated it (a rollback): additive, so old pods may start
            await connection.execute("UPDATE alembic_version SET version_num = '9999_newer'")
        finally:
            await connection.close()
        assert gate_passes(dsn), "a newer release's schema"
    finally:
        await drop_database(dsn)
