"""The run report says where a run stopped and who approved what; notifications reach the team by
email and Slack without secrets."""

from __future__ import annotations

import pytest

from bisman_ops.rollout import report
from bisman_ops.run_report import RunReport

TASKS = [
    "begin_run_report",
    "preflight.preflight_gate",
    "core_infrastructure.terraform_plan",
    "core_infrastructure.approve_plan",
    "core_infrastructure.terraform_apply",
    "core_infrastructure.core_infrastructure_gate",
    "usage_metering.usage_metering_gate",
]
PLAN = {
    "has_changes": True,
    "plan_sha256": "ab" * 32,
    "approval_subject": "Apply the Terraform plan?",
    "measured": {"headline": "1 to add", "plan": "s3://b/plans/x", "stateful_at_risk": []},
}
APPROVED = {
    "chosen_options": ["Approve"],
    "responded_by_user": {"id": "ops1", "name": "Ops One"},
    "responded_at": "2026-01-01T10:00:00Z",
}


def build(states: dict[str, str], results: dict, failures: dict | None = None) -> RunReport:
    return report.build(
        dag_id="bisman_rollout",
        run_id="r1",
        params={"environment": "staging"},
        task_ids=TASKS,
        states={t: {"state": s, "duration": 1.5} for t, s in states.items()},
        results=results,
        failures=failures or {},
    )


def test_report_names_the_step_and_message_where_apply_stopped():
    rr = build(
        {
            "preflight.preflight_gate": "success",
            "core_infrastructure.terraform_apply": "failed",
            "core_infrastructure.core_infrastructure_gate": "upstream_failed",
        },
        {report.PLAN_TASK: PLAN, report.APPROVAL_TASK: APPROVED},
        {"core_infrastructure.terraform_apply": {"message": "terraform apply failed (exit 1): boom"}},
    )
    d = rr.to_dict()
    values = d["sections"][0]["values"]
    assert d["outcome"] == "failed"
    assert values["phase reached"] == "preflight"
    assert values["stopped at"] == "core_infrastructure.terraform_apply"
    assert "boom" in values["stopped because"]
    approval = next(s for s in d["sections"] if s["title"] == "Approvals")["tables"][0]["rows"][0]
    assert approval[2:4] == ["Approve", "Ops One"]


def test_rejected_plan_is_the_outcome_with_who_rejected_it():
    rejected = {**APPROVED, "chosen_options": ["Reject"]}
    rr = build(
        {
            "preflight.preflight_gate": "success",
            "core_infrastructure.approve_plan": "success",
            "core_infrastructure.terraform_apply": "skipped",
        },
        {report.PLAN_TASK: PLAN, report.APPROVAL_TASK: rejected},
    )
    assert rr.outcome == "rejected"
    assert "rejected by Ops One" in rr.to_markdown()


def test_unbuilt_phase_is_reported_as_such_and_secrets_never_appear():
    rr = build(
        {
            "preflight.preflight_gate": "success",
            "core_infrastructure.core_infrastructure_gate": "success",
            "usage_metering.usage_metering_gate": "failed",
        },
        {
            "core_infrastructure.terraform_outputs_checked": {"outputs": {"db_name": "bisman_staging"}},
            "preflight.preflight_gate": {"measured": {"note": "key sk_live_abcdefghijkl"}},
        },
    )
    markdown = rr.to_markdown()
    assert "not built yet" in markdown and "core_infrastructure" in markdown
    assert "sk_live_abcdefghijkl" not in markdown


@pytest.fixture(scope="module")
def ctx():
    from bisman_sandbox.context import SandboxContext
    from bisman_sandbox.launcher import up

    c = SandboxContext.from_env()
    up(c)
    return c


def test_team_notifier_reaches_mail_and_slack_naming_what_failed_without_secrets(ctx, monkeypatch):
    import json
    import types

    from bisman_ops.notifiers import TeamNotifier
    from bisman_sandbox import launcher, sinks

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    sinks.clear(ctx)
    ti = types.SimpleNamespace(
        dag_id="bisman_rollout",
        task_id="read_replica.replica_lag_below_threshold",
        run_id="manual__1",
        log_url="http://airflow/log",
    )
    error = RuntimeError("replica lag 4.20 s > 1.0 s; DATABASE_URL=postgresql://app:s3cretpass@db/x")
    TeamNotifier().notify({"ti": ti, "params": {"environment": "staging"}, "exception": error})
    mail = sinks.wait_for_mail(ctx, lambda m: "replica_lag_below_threshold" in m["subject"])
    slack = sinks.wait_for_slack(ctx, lambda p: "replica_lag_below_threshold" in json.dumps(p))
    for text in (json.dumps(mail), json.dumps(slack)):
        assert "4.20 s" in text and "clear read_replica.replica_lag_below_threshold" in text
        assert "s3cretpass" not in text
