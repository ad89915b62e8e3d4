"""The browser tier: Debian's chromium driven by Playwright (never `playwright install`), logged in
to the session's Airflow as an operator. Each step leaves a screenshot in tests/ui/screenshots/
(git-ignored) for a person to look at."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bisman_sandbox.airflow_local import ADMIN_USER, AirflowLocal

CHROMIUM = "/usr/bin/chromium"
# No sandbox (root in a container); no background networking: this machine's closed network refuses
# Chromium's own connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path(__file__).with_name("screenshots")
UI_TIMEOUT_MS = 60_000  # a loaded 2-core machine renders slowly


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: scripts/setup.sh installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Operator:
    """An operator's browser session on the Airflow UI."""

    def __init__(self, page, base_url: str, test_name: str):
        self.page = page
        self.url = base_url
        self._name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self._step = 0

    def shot(self, what: str) -> Path:
        self._step += 1
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{self._name}-{self._step:02d}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def open(self, path: str) -> None:
        self.page.goto(f"{self.url}{path}")

    def trigger_dialog(self, dag_id: str):
        """The DAG's trigger form, opened from its page as an operator would."""
        self.open(f"/dags/{dag_id}")
        self.page.get_by_test_id("trigger-dag-button").click()
        dialog = self.page.get_by_role("dialog").filter(has_text=f"Trigger Dag - {dag_id}")
        dialog.wait_for()
        return dialog


def field(dialog, label: str):
    """A form field by its visible label (Airflow's labels are not tied to their inputs, so find the
    field's group by its label text)."""
    return dialog.get_by_role("group").filter(
        has=dialog.page.locator("label").filter(has_text=re.compile(rf"^{re.escape(label)}\s*\*?\s*$"))
    ).first


@pytest.fixture
def operator(browser, airflow, request) -> Operator:
    af = AirflowLocal.from_env()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{af.url}/auth/login/")
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[name=password]").fill(af.password())
    page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()
    page.get_by_test_id("nav-sidebar").wait_for()
    op = Operator(page, af.url, request.node.name)
    yield op
    context.close()
