"""Driving the real Compose stack from a test: build, start, talk to it, tear it down.

The stack runs under its own Compose project name, on free host ports, with the production
compose file, the offline stand-ins (deploy/docker/compose.offline.yml) and a test override
written here: Prometheus scrapes and evaluates every 2 s and every alert's ``for:`` is cut to a
few seconds (the expressions, thresholds and windows stay those of deploy/prometheus/alerts.yml),
and Alertmanager delivers to a webhook receiver served by the test.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from tests.stack.receiver import AlertReceiver

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYTHON = sys.executable
T = TypeVar("T")

# Alerts the test override lets fire this many seconds after their condition holds.
TEST_FOR = "4s"
EVALUATION = "2s"


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sh(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
    """Run a command from the repository root; fail the test with its output when it fails."""
    result = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`{' '.join(args)}` exited {result.returncode}\n{result.stdout[-4000:]}\n"
            f"{result.stderr[-4000:]}",
            pytrace=False,
        )
    return result.stdout


def wait_for(what: str, probe: Callable[[], T | None], *, timeout: float, every: float = 1) -> T:
    """Poll ``probe`` until it returns something other than None/False; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError) as exc:
            last, value = exc, None
        if value is not None and value is not False:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})")


@dataclass
class Stack:
    """One running Compose project and the ways in."""

    project: str
    workdir: Path
    env_file: Path
    ports: dict[str, int]
    passwords: dict[str, str]
    receiver: AlertReceiver
    admin_key: str = ""
    # Since when no alert has been pending or firing, and the receiver's mark at that moment.
    quiet_since: float = 0.0
    quiet_mark: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    @property
    def files(self) -> list[str]:
        return [
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(DEPLOY / "docker" / "compose.offline.yml"),
            "-f",
            str(self.workdir / "compose.test.yml"),
        ]

    def compose(self, *args: str, timeout: float = 600) -> str:
        """``docker compose`` on this project."""
        return sh(
            "docker",
            "compose",
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            *self.files,
            *args,
            timeout=timeout,
        )

    def url(self, service: str, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request to the containerised API as the admin."""
        headers = {"Authorization": f"Bearer {self.admin_key}", **kwargs.pop("headers", {})}
        return self.http.request(method, self.url("api", path), headers=headers, **kwargs)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query to the stack's Prometheus: the result vector."""
        response = self.http.get(self.url("prometheus", "/api/v1/query"), params={"query": promql})
        response.raise_for_status()
        data = response.json()["data"]
        return list(data["result"]) if data["resultType"] == "vector" else [data]


def prometheus_for_tests(workdir: Path) -> Path:
    """deploy/prometheus with quick scrapes and evaluations and short ``for:`` (same rules)."""
    folder = workdir / "prometheus"
    folder.mkdir()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=EVALUATION, evaluation_interval=EVALUATION)
    for job in config["scrape_configs"]:  # a stopped container leaves discovery in seconds
        for sd in job.get("dns_sd_configs", []):
            sd["refresh_interval"] = "5s"
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def alertmanager_for_tests(workdir: Path, receiver_port: int) -> Path:
    """Every alert straight to the test's webhook receiver, grouped for a second at most."""
    folder = workdir / "alertmanager"
    folder.mkdir()
    config = {
        "route": {
            "receiver": "test",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "test",
                "webhook_configs": [
                    {
                        "url": f"http://host.docker.internal:{receiver_port}/alerts",
                        "send_resolved": True,
                    }
                ],
            }
        ],
    }
    (folder / "alertmanager.yml").write_text(yaml.safe_dump(config))
    folder.chmod(0o755)
    (folder / "alertmanager.yml").chmod(0o644)
    return folder


def example_env() -> dict[str, str]:
    """The variables deploy/compose.env.example sets, every CHANGE-ME in them a fresh random
    value (`sk_CHANGE-ME` too): the .env deploy/docker/new-env.sh would write, so a secret added
    there reaches the stack."""
    env: dict[str, str] = {}
    for line in (DEPLOY / "compose.env.example").read_text().splitlines():
        name, equals, value = line.partition("=")
        if equals and not line.lstrip().startswith("#"):
            env[name.strip()] = value.strip().replace("CHANGE-ME", secrets.token_hex(12))
    return env


def write_stack_files(workdir: Path, receiver: AlertReceiver, extra_env: dict[str, str]) -> Stack:
    """The env file and the test override for a new project in ``workdir``."""
    ports = {
        name: free_port() for name in ("api", "prometheus", "alertmanager", "rabbitmq", "grafana")
    }
    env = {
        **example_env(),
        "API_PORT": str(ports["api"]),
        "PROMETHEUS_PORT": str(ports["prometheus"]),
        "ALERTMANAGER_PORT": str(ports["alertmanager"]),
        "RABBITMQ_MANAGEMENT_PORT": str(ports["rabbitmq"]),
        "GRAFANA_PORT": str(ports["grafana"]),
        "ORDERFLOW_AUTOPILOT": "true",
    }
    passwords = {
        name: env[f"{name.upper()}_PASSWORD"] for name in ("postgres", "rabbitmq", "redis")
    }
    env_file = workdir / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    prometheus = prometheus_for_tests(workdir)
    alertmanager = alertmanager_for_tests(workdir, receiver.port)
    override = {
        "services": {
            "prometheus": {"volumes": [f"{prometheus}:/etc/prometheus:ro"]},
            "alertmanager": {
                "volumes": [f"{alertmanager}:/etc/alertmanager:ro"],
                "extra_hosts": ["host.docker.internal:host-gateway"],
            },
            **{name: {"environment": extra_env} for name in ("api", "relay", "worker")},
        }
    }
    (workdir / "compose.test.yml").write_text(yaml.safe_dump(override))
    return Stack(
        project=f"orderflow-stacktest-{secrets.token_hex(3)}",
        workdir=workdir,
        env_file=env_file,
        ports=ports,
        passwords=passwords,
        receiver=receiver,
    )


@contextmanager
def start(stack: Stack) -> Iterator[Stack]:
    """Bring the stack up (one worker), yield it, then tear it down with its volumes; the
    containers' logs are kept in the work directory (the path is printed)."""
    try:
        stack.compose("up", "--detach", "--wait", "--no-build", "--scale", "worker=1")
        yield stack
    finally:
        logs = stack.workdir / "compose.log"
        logs.write_text(stack.compose("logs", "--no-color", "--timestamps"))
        print(f"stack logs: {logs}")
        stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5")
        stack.http.close()
        stack.receiver.close()
