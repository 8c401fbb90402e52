"""``orderflow up``: children in their own process groups, stopped together, no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from orderflow.settings import Settings
from tests.integration.backbone.helpers import REPO, process_env

pytestmark = pytest.mark.fault


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_up(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orderflow.entrypoints.cli",
            "up",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--workers",
            "2",
        ],
        cwd=REPO,
        # ``up`` starts a payment gateway: on a port of its own, not this run's.
        env=process_env(
            settings.model_copy(update={"gateway_url": f"http://127.0.0.1:{_free_port()}"})
        ),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "orderflow up exited early"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the api did not come up")


def _wait_gone(pids: list[int], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, "children left behind"
        time.sleep(0.1)


def test_up_runs_gateway_api_relay_and_workers_and_stops_them_all_on_sigterm(
    bb_settings: Settings,
) -> None:
    proc = _start_up(bb_settings, _free_port())
    try:
        children = _children(proc.pid)
        assert len(children) == 5  # the payment gateway, api, relay, two workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        _wait_gone(children)
    finally:
        proc.kill()


def test_up_stops_the_rest_and_fails_when_a_child_dies(bb_settings: Settings) -> None:
    proc = _start_up(bb_settings, _free_port())
    try:
        children = _children(proc.pid)
        os.kill(children[-1], signal.SIGKILL)
        assert proc.wait(20) != 0
        _wait_gone(children)
    finally:
        proc.kill()
