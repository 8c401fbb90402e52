"""Browser tests: Debian's Chromium, headless, driven by Playwright against the real system
(``orderflow up``: migrate, api, relay and a worker as processes; no autopilot, so that the
warehouse and carrier steps wait for a person) on a database and queues of their own.

``make test`` installs Chromium when it is missing (``scripts/ensure-tools.sh``). Set
``ORDERFLOW_SCREENSHOTS=DIR`` to have the tests save a screenshot of each page there
(docs/dashboard.md shows the ones in docs/dashboard/).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from orderflow.domain.access import Role
from orderflow.settings import Settings
from tests.conftest import child_env, fresh_database, open_pool, settings_apart
from tests.e2e.conftest import free_port
from tests.integration.conftest import bearer

CHROMIUM = os.environ.get("ORDERFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY_CACHE_TTL_S = 1.0
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=390, height=844)
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def ui_settings(settings: Settings) -> Settings:
    """This run's settings with a database and queues of their own."""
    return settings_apart(settings, "browser")


@pytest.fixture(scope="session")
async def ui_database(ui_settings: Settings) -> AsyncIterator[str]:
    async with fresh_database(ui_settings.dsn()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
async def pool(ui_settings: Settings, ui_database: str) -> AsyncIterator[asyncpg.Pool]:
    """The browser tests' database (overrides the shared test database here)."""
    async with open_pool(ui_settings, max_size=4) as pool:
        yield pool


@pytest.fixture(scope="session")
def system(
    ui_settings: Settings, ui_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``orderflow up --no-autopilot`` on a free port; yields its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("browser") / "up.log"
    env = child_env(
        ui_settings,
        ORDERFLOW_LOG_LEVEL="WARNING",
        ORDERFLOW_AUTH_CACHE_TTL_S=str(KEY_CACHE_TTL_S),
        ORDERFLOW_ADMIN_REFRESH_S="0.5",
        ORDERFLOW_RATE_LIMITS='{"read": "100000/1", "write": "10000/1", "orders": "10000/1"}',
    )
    command = [sys.executable, "-m", "orderflow.entrypoints.cli", "up", "--port", str(port)]
    command += ["--no-autopilot", "--workers", "1", "--metrics-port", "0"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"orderflow up exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"orderflow up did not become ready:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless (``make test`` installs it: scripts/ensure-tools.sh)."""
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run `make tools` (apt-get install chromium)",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium: Browser, system: str) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) at 1280x800 on the running system."""
    context = await chromium.new_context(base_url=system, viewport=DESKTOP)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    await context.close()
    # A script error or a refused resource (CSP) fails the test that caused it; 401s and
    # 403s the test asked for are logged by the browser as failed loads: not errors of ours.
    ours = [e for e in errors if "status of 40" not in e]
    assert not ours, f"the page logged errors: {ours}"


@pytest.fixture
async def api(system: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the running system's API, holding an admin key."""
    headers = {"Authorization": f"Bearer {await bearer(pool, Role.ADMIN)}"}
    async with httpx.AsyncClient(base_url=system, timeout=10, headers=headers) as client:
        yield client


async def log_in(page: Page, key: str) -> None:
    """Log in through the form, with the keyboard: type the key, press Enter."""
    await page.goto("/admin/login")
    await page.get_by_label("Admin or staff API key").fill(key)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_contain_text(key.split("_")[1])


async def shoot(page: Page, name: str, *, full: bool = True) -> None:
    """Save a screenshot of the page when ORDERFLOW_SCREENSHOTS names a directory."""
    folder = os.environ.get("ORDERFLOW_SCREENSHOTS")
    if folder:
        await page.wait_for_timeout(300)  # let the last redraw settle
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full)


async def until(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 20) -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {check.__name__}")
        await asyncio.sleep(0.1)
