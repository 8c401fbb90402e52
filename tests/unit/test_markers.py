"""Every test that stops a shared service says so (the ``stops_services`` marker), so that
``-m 'not stops_services'`` really leaves the machine's services alone (README)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# What stops or restarts a shared local service: the broker's app, the PostgreSQL cluster,
# the Redis server. (Cutting one's own database's sessions with pg_terminate_backend does
# not: the server keeps running for everyone else.)
STOPS = re.compile(
    r"rabbitmqctl\(\s*[\"'](stop_app|stop|shutdown)|pg_ctlcluster[^\n]*\b(stop|restart)\b"
    r"|[\"']shutdown[\"']|\.shutdown\(|systemctl[^\n]*\b(stop|restart)\b"
)


def _marked(node: ast.AsyncFunctionDef | ast.FunctionDef, module: ast.Module) -> bool:
    decorators = [ast.unparse(d) for d in node.decorator_list]
    module_marks = [
        ast.unparse(n.value)
        for n in module.body
        if isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
    ]
    return any("stops_services" in text for text in decorators + module_marks)


def test_every_test_that_stops_a_shared_service_carries_the_marker() -> None:
    unmarked = []
    checked = 0
    for path in TESTS.rglob("test_*.py"):
        source = path.read_text()
        if not STOPS.search(source):
            continue  # no test body in it can match: spare parsing it
        module = ast.parse(source)
        for node in ast.walk(module):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                body = ast.get_source_segment(source, node) or ""
                if STOPS.search(body):
                    checked += 1
                    if not _marked(node, module):
                        unmarked.append(f"{path.relative_to(TESTS)}::{node.name}")
    assert checked >= 1  # the broker-restart test at least: the pattern still finds it
    assert not unmarked, f"stop a shared service without @pytest.mark.stops_services: {unmarked}"
