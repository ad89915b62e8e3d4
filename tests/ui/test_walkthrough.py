"""The operator's walkthrough in a real browser: what an operator sees and does in the Airflow UI."""

from __future__ import annotations

import re
import time

from bisman_sandbox import aws
from bisman_sandbox.process import wait_until
from tests.e2e import approvals
from tests.e2e import rollout_runs as rr
from tests.ui.conftest import field

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
    assert listed == DAG_IDS

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
    """The run's page as the operator watches it, until the run has ended."""
    operator.open(f"/dags/{ROLLBACK}/runs/{run['dag_run_id']}")
    state = airflow.wait_for_run(ROLLBACK, run["dag_run_id"], timeout=900)
    operator.page.reload()
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


def test_the_plan_is_approved_with_a_click_and_the_grid_shows_each_phase_pass(operator, airflow, sandbox):
    # The drills were shown by the e2e rehearsal; here the operator's part: approve, then watch.
    conf = rr.form(sandbox, replica_failure_drill=False, alert_threshold_drill=False,
                   chaos_drills=False)
    airflow.wait_for_dag(rr.DAG_ID)
    airflow.unpause(rr.DAG_ID)
    run_id = airflow.trigger(rr.DAG_ID, conf)
    task_page = f"/dags/{rr.DAG_ID}/runs/{run_id}/tasks/{rr.APPROVE}/required_actions"
    for _ in range(3):  # the Airflow 3.3.2 race of tests/e2e/approvals.py: asked again, answer again
        airflow.wait_for_task_state(rr.DAG_ID, run_id, rr.APPROVE, ("awaiting_input",), timeout=900)
        asked = approvals.task_instance(airflow, rr.DAG_ID, run_id, rr.APPROVE)["try_number"]
        wait_until(lambda asked=asked: approvals.pause_seen_by_scheduler(
            rr.DAG_ID, run_id, rr.APPROVE, asked), timeout=300, what="the approval's pause seen", interval=1)
        # Required Actions lists it; its page shows the plan summary with its SHA-256, and the choices.
        operator.open("/required_actions?response_received=false")
        subject = re.compile(r"Apply the Terraform plan to staging\?")
        operator.page.get_by_role("link", name=subject).first.wait_for()
        operator.shot("required-actions")
        operator.open(task_page)
        operator.page.get_by_text(re.compile(r"Plan SHA-256")).first.wait_for()
        operator.page.get_by_text(re.compile(r"to add|to change|to destroy|Plan:")).first.wait_for()
        operator.shot("plan-approval")
        operator.page.get_by_role("button", name="Approve", exact=True).click()
        wait_until(lambda asked=asked: approvals.answer_taken(airflow, rr.DAG_ID, run_id, rr.APPROVE, asked),
                   timeout=300, what="the approval to take the click", interval=1)
        if approvals.task_instance(airflow, rr.DAG_ID, run_id, rr.APPROVE)["state"] == "success":
            break
    assert airflow.hitl_details(rr.DAG_ID, run_id, rr.APPROVE)["chosen_options"] == ["Approve"]

    # The operator watches the run's grid: each built phase's gate turns green in turn.
    operator.open(f"/dags/{rr.DAG_ID}/runs/{run_id}")
    for group in rr.PHASES[1:]:
        state = airflow.wait_for_task_state(rr.DAG_ID, run_id, f"{group}.{group}_gate",
                                            ("success", "failed", "upstream_failed"), timeout=rr.RUN_TIMEOUT)
        operator.page.reload()
        operator.page.get_by_text(group, exact=True).first.wait_for()
        operator.shot(f"grid-{group}")
        assert state == "success", group
    assert rr.finished(airflow, run_id) == "success"
    operator.page.reload()
    operator.page.get_by_text(re.compile(r"^success$", re.I)).first.wait_for()
    operator.shot("run-ended")
