"""The operator's walkthrough in a real browser: what an operator sees and does in the Airflow UI."""

from __future__ import annotations

import re
import time

import pytest

from bisman_sandbox import aws
from tests.browser import field
from tests.e2e import rollout_runs as rr

DAG_IDS = {
    "bisman_rollout", "bisman_daily_usage_aggregation", "bisman_trial_expiry", "bisman_quota_alerts",
    "bisman_weekly_audit", "bisman_rollback_application", "bisman_rollback_database",
    "bisman_rollback_infrastructure",
}
ROLLBACK = "bisman_rollback_application"
REASON = "INC-4243 the UI walkthrough rolls the application back"


def test_dag_list_shows_the_eight_dags_each_with_its_docs(operator, airflow):
    assert airflow.import_errors() == []
    page = operator.page
    operator.open("/dags")
    page.get_by_test_id("dag-card").first.wait_for()
    operator.shot("dag-list")
    listed = {page.get_by_test_id("dag-id").nth(i).inner_text().strip()
              for i in range(page.get_by_test_id("dag-id").count())}
    assert listed - {"bisman_celery_probe"} == DAG_IDS  # the Celery test's probe, in a bundle of its own

    for dag_id in sorted(DAG_IDS):
        operator.open(f"/dags/{dag_id}")
        page.get_by_test_id("markdown-button").click()
        docs = page.get_by_role("dialog").filter(has_text=re.compile(r"\w{4,}"))
        heading = page.get_by_role("heading").filter(has_text=re.compile(r"\w{4,}")).last
        heading.wait_for()
        operator.shot(f"docs-{dag_id}")
        assert docs.count() >= 1
        page.keyboard.press("Escape")


def test_a_malformed_domain_in_the_rollout_form_is_refused_and_creates_no_run(operator, airflow):
    before = airflow._call("GET", "/dags/bisman_rollout/dagRuns?limit=1")["total_entries"]
    dialog = operator.trigger_dialog("bisman_rollout")
    # The fields are grouped by phase, each group a section the operator opens.
    for section in ("Target", "Preflight and core infrastructure", "Read replica",
                    "Usage metering and quotas", "Billing (Stripe)", "Scheduled jobs", "Monitoring",
                    "Chaos drills", "Post-deploy"):
        dialog.get_by_role("button", name=section, exact=True).wait_for()
    dialog.get_by_role("button", name="Target", exact=True).click()
    operator.shot("rollout-form")
    field(dialog, "API domain name").get_by_role("textbox").fill("not a domain!")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.get_by_text(re.compile(r"domain_name|does not match", re.I)).first.wait_for()
    operator.shot("rollout-form-refused")
    assert dialog.is_visible()
    assert airflow._call("GET", "/dags/bisman_rollout/dagRuns?limit=1")["total_entries"] == before


def test_an_unknown_environment_pasted_into_the_rollout_form_is_refused_and_creates_no_run(operator, airflow):
    before = airflow._call("GET", "/dags/bisman_rollout/dagRuns?limit=1")["total_entries"]
    dialog = operator.trigger_dialog("bisman_rollout")
    operator.paste_configuration(dialog, {"environment": "qa"})
    operator.shot("rollout-form-unknown-environment")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.get_by_text(re.compile(r"'qa' is not one of")).first.wait_for()
    operator.shot("rollout-form-unknown-environment-refused")
    assert dialog.is_visible()
    assert airflow._call("GET", "/dags/bisman_rollout/dagRuns?limit=1")["total_entries"] == before


def _latest_run(airflow, dag_id: str) -> dict | None:
    runs = airflow._call("GET", f"/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1")["dag_runs"]
    return runs[0] if runs else None


def _trigger_rollback_from_the_form(operator, airflow, confirm: str, shot: str) -> dict:
    before = _latest_run(airflow, ROLLBACK)
    dialog = operator.trigger_dialog(ROLLBACK)
    field(dialog, "Reason").get_by_role("textbox").fill(REASON)
    field(dialog, "Confirm").get_by_role("textbox").fill(confirm)
    operator.shot(f"{shot}-form")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.wait_for(state="hidden")
    deadline = time.monotonic() + 60
    while (run := _latest_run(airflow, ROLLBACK)) is None or run == before or (
            before and run["dag_run_id"] == before["dag_run_id"]):
        assert time.monotonic() < deadline, "the form created no run"
        time.sleep(1)
    return run


def _watch_run(operator, airflow, run: dict, shot: str) -> str:
    """The run's page as the operator finds it when the run has ended (not left open meanwhile:
    see Operator.look_away)."""
    operator.look_away()
    state = airflow.wait_for_run(ROLLBACK, run["dag_run_id"], timeout=900)
    operator.open(f"/dags/{ROLLBACK}/runs/{run['dag_run_id']}")
    operator.page.get_by_text(re.compile(rf"^{state}$", re.I)).first.wait_for()
    operator.shot(shot)
    return state


def test_an_application_rollback_from_its_form_is_refused_with_a_wrong_confirmation_then_runs(
        operator, airflow, sandbox, service_on_revision_2):
    names, ecs = aws.names(), aws.client(sandbox, "ecs")
    airflow.wait_for_dag(ROLLBACK)
    airflow.unpause(ROLLBACK)  # as the e2e tier leaves it; this tier may also run alone

    def revision() -> str:
        service = ecs.describe_services(cluster=names.ecs_cluster_name, services=[names.ecs_service_name])
        return service["services"][0]["taskDefinition"].rsplit(":", 1)[-1]

    refused = _trigger_rollback_from_the_form(operator, airflow, "not-the-service", "wrong-confirmation")
    assert _watch_run(operator, airflow, refused, "wrong-confirmation-run") == "failed"
    states = {t["task_id"]: t["state"] for t in airflow.task_instances(ROLLBACK, refused["dag_run_id"])}
    assert states["validate_request"] == "failed" and states["acquire_change_lock"] == "upstream_failed"
    assert revision() == "2"  # nothing changed
    # The failed task's log says what was wrong.
    operator.open(f"/dags/{ROLLBACK}/runs/{refused['dag_run_id']}/tasks/validate_request")
    operator.page.get_by_text(re.compile(r"'not-the-service'")).first.wait_for()
    operator.shot("wrong-confirmation-log")

    done = _trigger_rollback_from_the_form(operator, airflow, names.ecs_service_name, "right-confirmation")
    assert _watch_run(operator, airflow, done, "right-confirmation-run") == "success"
    assert revision() == "1"


@pytest.mark.timeout(2400)  # the rehearsal itself when this tier runs alone
def test_the_plan_is_approved_with_a_click_and_the_grid_shows_each_phase_pass(rehearsal, operator, airflow):
    """The e2e tier's rehearsal was approved in this browser (tests/e2e/rehearsal.py): its plan found
    on Required actions and approved with a click, its grid watched as each phase's gate ended."""
    hitl = airflow.hitl_details(rr.DAG_ID, rehearsal.run_id, rr.APPROVE)
    assert hitl["chosen_options"] == ["Approve"] and hitl["responded_by_user"]["name"] == "admin", hitl
    assert list(rehearsal.grid) == list(rr.PHASES[1:])
    assert set(rehearsal.grid.values()) == {"success"}, rehearsal.grid
    shown = {p.name.split("-", 2)[2].removesuffix(".png") for p in rehearsal.screenshots}
    assert {"required-actions", "plan-approval", "run-ended",
            *(f"grid-{phase}" for phase in rr.PHASES[1:])} <= shown, shown
    # The finished run as an operator opens it afterwards: every phase's gate green.
    operator.open(f"/dags/{rr.DAG_ID}/runs/{rehearsal.run_id}")
    operator.page.get_by_text(re.compile(r"^success$", re.I)).first.wait_for()
    for phase in rr.PHASES:
        operator.page.get_by_text(phase, exact=True).first.wait_for()
    operator.shot("rehearsal-run")
    # The run report opens from the run: the plugin's tab shows it, with each phase's gate.
    operator.page.get_by_text("Run report", exact=True).first.click()
    report = operator.page.frame_locator("iframe").first
    report.get_by_role("heading", name="BISMAN ERP rollout to staging").wait_for()
    for phase in rr.PHASES:
        report.get_by_role("heading", name=re.compile(rf"^{phase} gate success$")).wait_for()
    operator.shot("run-report")
