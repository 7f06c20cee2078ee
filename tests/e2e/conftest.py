"""Browser tests: Debian's Chromium driven by Playwright against real daphne, the real task worker and the
Telegram sandbox, all on the test database and Redis.

One browser serves the whole session and one server and worker each module (they are slow to start);
every test gets a clean database (transactional_db), a reset sandbox and fresh browser contexts. Pages are
watched for console errors, uncaught exceptions and Content-Security-Policy violations, and a screenshot of
each is saved under ARTIFACTS when its test ends.
"""

import re
import shutil
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright, expect

from tests.conftest import (
    BASE_DIR,
    CHROMIUM,
    WEBHOOK_SECRET,
    launch_server,
    launch_worker,
    server_environment,
    unique_bot_token,
)

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = BASE_DIR / "test-artifacts" / "e2e"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
PASSWORD = "desk-password"
BROWSER_RAN = []  # non-empty once this session has started the browser (and so written screenshots)

# Playwright's assertions poll until they hold; give a busy machine time.
expect.set_options(timeout=20_000)

# Runs in every page before its own scripts: remembers the Content-Security-Policy violations it reports.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
});
"""


def pytest_terminal_summary(terminalreporter):
    if BROWSER_RAN and ARTIFACTS.exists():
        terminalreporter.write_line(f"Browser test screenshots: {ARTIFACTS}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    BROWSER_RAN.append(True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        await browser.close()


@pytest.fixture(scope="module")
def desk_stack(django_db_setup, _sandbox_server, tmp_path_factory):
    """daphne and the task worker for this module, on the test database, Redis and the sandbox."""
    env = server_environment(unique_bot_token(), _sandbox_server.url)
    log_dir = tmp_path_factory.mktemp("desk")
    server = launch_server(env, log_dir)
    worker = launch_worker(env, log_dir / "worker.log")
    yield SimpleNamespace(server=server, worker=worker)
    worker.stop()
    server.stop()


@dataclass
class WatchedPage:
    """A page, and what went wrong in it: console errors, uncaught exceptions."""

    page: Page
    label: str
    problems: list = field(default_factory=list)
    # Console errors this test expects (regular expressions), e.g. refused connections while the server is down.
    expected: tuple = ()

    def console(self, message):
        if message.type == "error" and not any(re.search(pattern, message.text) for pattern in self.expected):
            self.problems.append(f"console: {message.text}")


@pytest_asyncio.fixture(loop_scope="session")
async def desk(request, browser, desk_stack, sandbox, transactional_db):
    """The desk for one test: ``desk.bot`` (the sandbox's control API for the server's bot), ``desk.server``,
    and ``await desk.open(user, path, viewport=DESKTOP)`` for a page logged in as ``user``.

    When the test ends, each page is photographed and must have had no console error, uncaught exception
    or CSP violation.
    """
    server = desk_stack.server
    bot = sandbox.client(server.token)
    bot.set_webhook(f"{server.url}/telegram/webhook/", secret=WEBHOOK_SECRET)
    contexts, watched = [], []

    async def open_page(user, path, viewport=DESKTOP, label=None, expected_console=()):
        context = await browser.new_context(viewport=viewport, base_url=server.url)
        contexts.append(context)
        await context.add_init_script(RECORD_CSP_VIOLATIONS)
        page = await context.new_page()
        entry = WatchedPage(page, label or f"{user.username}-{viewport['width']}", expected=expected_console)
        watched.append(entry)
        page.on("console", entry.console)
        page.on("pageerror", lambda error: entry.problems.append(f"uncaught: {error}"))
        await log_in(page, user, path)
        return page

    yield SimpleNamespace(server=server, bot=bot, open=open_page)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems = []
    for entry in watched:
        if entry.page.is_closed():
            continue
        await entry.page.screenshot(path=ARTIFACTS / f"{request.node.name}-{entry.label}.png")
        violations = await entry.page.evaluate("window.__cspViolations")
        problems += [f"{entry.label}: CSP violation: {violation}" for violation in violations]
        problems += [f"{entry.label}: {problem}" for problem in entry.problems]
    for context in contexts:
        await context.close()
    assert not problems, "\n".join(problems)


async def log_in(page, user, path):
    """Log in through the login page, which then forwards to ``path``."""
    await page.goto(f"/accounts/login/?next={path}")
    await page.fill("input[name=username]", user.username)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"**{path}")


@pytest.fixture
def agents(django_user_model):
    """Two agents with names, as colleagues working the same tickets."""
    return SimpleNamespace(
        alice=django_user_model.objects.create_user(
            "alice", password=PASSWORD, is_staff=True, first_name="Alice", last_name="Martin"
        ),
        bob=django_user_model.objects.create_user(
            "bob", password=PASSWORD, is_staff=True, first_name="Bob", last_name="Chen"
        ),
    )
