"""Debian's chromium driven by Playwright (never `playwright install`), logged in to the session's
Airflow as an operator. Each step leaves a screenshot in tests/ui/screenshots/ (git-ignored) for a
person to look at. The browser tier uses it, and so does the e2e rehearsal: its plan is approved
with a click and its grid watched, so one approved rollout serves both tiers."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bisman_sandbox.airflow_local import ADMIN_USER, AirflowLocal
from bisman_sandbox.process import wait_until
from tests.e2e import approvals

CHROMIUM = "/usr/bin/chromium"
# No sandbox (root in a container); no background networking: this machine's closed network refuses
# Chromium's own connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = Path(__file__).parent / "ui" / "screenshots"
UI_TIMEOUT_MS = 60_000  # a loaded 2-core machine renders slowly
GATE_ENDED = ("success", "failed", "upstream_failed", "skipped")


class Operator:
    """An operator's browser session on the Airflow UI."""

    def __init__(self, context, page, base_url: str, name: str):
        self.context = context
        self.page = page
        self.url = base_url
        self._name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self._step = 0

    def shot(self, what: str) -> Path:
        self._step += 1
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{self._name}-{self._step:02d}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def open(self, path: str) -> None:
        self.page.goto(f"{self.url}{path}")

    def look_away(self) -> None:
        """Leave the Airflow UI while a run goes on. An open run page refreshes itself every 3 s:
        measured on this 2-core machine with a rollout run in progress, that took 0.6 of a core
        (a minute of it: Chromium's renderer 25 s of CPU, the API server 11 s) from the run itself
        and from the other test session."""
        self.page.goto("about:blank")

    def trigger_dialog(self, dag_id: str):
        """The DAG's trigger form, opened from its page as an operator would."""
        self.open(f"/dags/{dag_id}")
        self.page.get_by_test_id("trigger-dag-button").click()
        dialog = self.page.get_by_role("dialog").filter(has_text=f"Trigger Dag - {dag_id}")
        dialog.wait_for()
        return dialog

    def paste_configuration(self, dialog, conf: dict, run_id: str | None = None) -> None:
        """In the trigger form's *Advanced Options*: the run's id, and the configuration JSON pasted
        as an operator pastes a prepared file (typed, the editor would close brackets and indent
        lines a second time; its input element is focusable but not visible)."""
        dialog.get_by_role("button", name="Advanced Options").click()
        if run_id:
            field(dialog, "Run ID").get_by_role("textbox").fill(run_id)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.url)
        self.page.evaluate("text => navigator.clipboard.writeText(text)", json.dumps(conf, indent=2))
        field(dialog, "Configuration JSON").get_by_role("textbox").focus()
        self.page.keyboard.press("ControlOrMeta+A")
        self.page.keyboard.press("ControlOrMeta+V")
        field(dialog, "Run ID").get_by_role("textbox").click()  # the editor's blur updates the form

    def trigger_with_configuration(self, dag_id: str, conf: dict, run_id: str) -> None:
        """Trigger from the DAG's form with a prepared configuration and run id."""
        dialog = self.trigger_dialog(dag_id)
        self.paste_configuration(dialog, conf, run_id)
        self.shot("trigger-form-configuration")
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        dialog.wait_for(state="hidden")

    def close(self) -> None:
        self.context.close()


def log_in(browser, name: str) -> Operator:
    """A new browser context logged in to the session's Airflow as the admin operator."""
    af = AirflowLocal.from_env()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{af.url}/auth/login/")
    page.locator("input[name=username]").fill(ADMIN_USER)
    page.locator("input[name=password]").fill(af.password())
    page.get_by_role("button", name=re.compile("sign in|log in|login", re.I)).click()
    page.get_by_test_id("nav-sidebar").wait_for()
    return Operator(context, page, af.url, name)


def field(dialog, label: str):
    """A form field by its visible label (Airflow's labels are not tied to their inputs, so find the
    field's group by its label text)."""
    return dialog.get_by_role("group").filter(
        has=dialog.page.locator("label").filter(has_text=re.compile(rf"^{re.escape(label)}\s*\*?\s*$"))
    ).first


def approve_with_a_click(operator: Operator, af, dag_id: str, run_id: str, task_id: str,
                         subject: re.Pattern, timeout: float = 900) -> dict:
    """Find the approval on *Required actions*, read the plan on its page, click Approve; returns
    what it asked. Answered once the scheduler saw the pause, again if Airflow asks again
    (the 3.3.2 race of tests/e2e/approvals.py)."""
    task_page = f"/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/required_actions"
    details = None
    for _ in range(3):
        operator.look_away()
        af.wait_for_task_state(dag_id, run_id, task_id, ("awaiting_input",), timeout=timeout)
        asked = approvals.task_instance(af, dag_id, run_id, task_id)["try_number"]
        details = details or af.hitl_details(dag_id, run_id, task_id)
        wait_until(lambda asked=asked: approvals.pause_seen_by_scheduler(dag_id, run_id, task_id, asked),
                   timeout=300, what="the approval's pause seen", interval=1)
        # Required Actions lists it; its page shows the plan summary with its SHA-256, and the choices.
        operator.open("/required_actions?response_received=false")
        operator.page.get_by_role("link", name=subject).first.wait_for()
        operator.shot("required-actions")
        operator.open(task_page)
        operator.page.get_by_text(re.compile(r"Plan SHA-256")).first.wait_for()
        operator.page.get_by_text(re.compile(r"to add|to change|to destroy|Plan:")).first.wait_for()
        operator.shot("plan-approval")
        operator.page.get_by_role("button", name="Approve", exact=True).click()
        wait_until(lambda asked=asked: approvals.answer_taken(af, dag_id, run_id, task_id, asked),
                   timeout=300, what="the approval to take the click", interval=1)
        # Only now: leaving the page at once cancelled the click's request to the API (seen once).
        operator.look_away()
        if approvals.task_instance(af, dag_id, run_id, task_id)["state"] in ("success", "failed"):
            return details
    raise AssertionError(f"{task_id} asked three times")


def watch_the_grid(operator: Operator, af, dag_id: str, run_id: str, gates: dict[str, str],
                   timeout: float) -> dict[str, str]:
    """The run's grid as the operator checks on it: opened as each phase's gate ends, a screenshot
    of it, then the operator looks away until the next. Returns the state of each gate
    (phase -> state) as it was seen."""
    seen: dict[str, str] = {}
    for phase, gate in gates.items():
        seen[phase] = af.wait_for_task_state(dag_id, run_id, gate, GATE_ENDED, timeout=timeout)
        operator.open(f"/dags/{dag_id}/runs/{run_id}")
        operator.page.get_by_text(phase, exact=True).first.wait_for()
        operator.shot(f"grid-{phase}")
        operator.look_away()
    return seen
