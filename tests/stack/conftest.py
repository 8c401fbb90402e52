"""The one stack every test of tests/stack shares: built, started and torn down once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import alerting
from tests.stack.receiver import AlertReceiver
from tests.stack.shop import create_catalogue
from tests.stack.stack import DEPLOY, PYTHON, ROOT, Stack, sh, start, write_stack_files


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    sh(str(ROOT / "scripts" / "ensure-docker.sh"), env={"PYTHON": PYTHON})
    sh(str(DEPLOY / "docker" / "build-images.sh"), env={"PYTHON": PYTHON}, timeout=1800)
    workdir: Path = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)  # the containers read their configuration from here
    faster = {
        # the worker's watches every 2 s instead of 15, its invariant audit every 5 s instead of
        # 300, and an order awaiting payment is overdue after 15 s (the overdue fault);
        # everything else is production's
        "ORDERFLOW_SYSTEM_WATCH_INTERVAL_S": "2",
        "ORDERFLOW_SLA_WATCH_INTERVAL_S": "2",
        "ORDERFLOW_SLA_DEADLINES_S": json.dumps({"awaiting_payment": 15}),
        "ORDERFLOW_AUDIT_INTERVAL_S": "5",
    }
    with start(write_stack_files(workdir, AlertReceiver(), extra_env=faster)) as running:
        alerting.settle(running)
        yield running


@pytest.fixture(scope="session")
def catalogue(stack: Stack) -> dict[str, str]:
    """A product and a customer, created through the API with the first admin key."""
    return create_catalogue(stack)
