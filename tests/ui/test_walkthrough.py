"""The operator's walkthrough in a real browser: what an operator sees and does in the Airflow UI."""

from __future__ import annotations

import re

from tests.ui.conftest import field

DAG_IDS = {
    "bisman_rollout", "bisman_daily_usage_aggregation", "bisman_trial_expiry", "bisman_quota_alerts",
    "bisman_weekly_audit", "bisman_rollback_application", "bisman_rollback_database",
    "bisman_rollback_infrastructure",
}


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
                    "Usage metering and quotas", "Billing (Stripe)", "Scheduled jobs"):
        dialog.get_by_role("button", name=section, exact=True).wait_for()
    dialog.get_by_role("button", name="Target", exact=True).click()
    operator.shot("rollout-form")
    field(dialog, "API domain name").get_by_role("textbox").fill("not a domain!")
    dialog.get_by_role("button", name="Trigger", exact=True).click()
    dialog.get_by_text(re.compile(r"domain_name|does not match", re.I)).first.wait_for()
    operator.shot("rollout-form-refused")
    assert dialog.is_visible()
    assert airflow._call("GET", "/dags/bisman_rollout/dagRuns?limit=1")["total_entries"] == before
