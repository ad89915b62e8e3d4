"""Notifications reach the team by email and Slack, saying what failed and what to do, without
secrets."""

from __future__ import annotations

import json
import uuid

import pytest


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

    from bisman_ops.change.notify import TeamNotifier
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


def _report(failed_task: str, *, changed: bool):
    from bisman_ops.change.report import TaskView, assemble

    tasks = [TaskView("validate_request", "success", 0.1, {"measured": {"ok": True}}),
             TaskView(failed_task, "failed", 0.2, {"changed": changed,
                                                  "failure": {"message": "confirm: seen 'yes'; expected x"}})]
    return assemble(title="Application rollback", reason="INC-1", dag_id="bisman_rollback_application",
                    run_id=f"manual__{uuid.uuid4().hex[:8]}", params={"environment": "staging"}, tasks=tasks)


def _delivered(ctx, run_id: str) -> tuple[list[dict], list[str]]:
    from bisman_sandbox import sinks

    mails = [m for m in sinks.captured_mail(ctx) if run_id in m["subject"] + m.get("text", "")]
    slack = [json.dumps(p) for p in sinks.captured_slack(ctx) if run_id in json.dumps(p)]
    return mails, slack


def test_a_refused_request_is_one_refused_line_in_slack_and_pages_no_one(ctx, monkeypatch):
    """issue 23 point 3: nothing changed, so no mail and nothing marked FAILED."""
    from bisman_ops.change import notify
    from bisman_sandbox import launcher, sinks

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    report = _report("validate_request_again", changed=False)
    assert report.outcome == "refused"

    assert notify.outcome(report, {}) == "slack"

    sinks.wait_for_slack(ctx, lambda p: report.run_id in json.dumps(p))
    mails, slack = _delivered(ctx, report.run_id)
    assert mails == [] and len(slack) == 1
    assert "REFUSED" in slack[0] and "FAILED" not in slack[0] and "confirm: seen 'yes'" in slack[0]


def test_a_failed_run_is_one_notice_per_channel_naming_the_failed_task(ctx, monkeypatch):
    from bisman_ops.change import notify
    from bisman_sandbox import launcher, sinks

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    report = _report("switch_traffic", changed=True)

    assert notify.outcome(report, {}) == "email, slack"

    mail = sinks.wait_for_mail(ctx, lambda m: report.run_id in m["subject"])
    sinks.wait_for_slack(ctx, lambda p: report.run_id in json.dumps(p))
    mails, slack = _delivered(ctx, report.run_id)
    assert len(mails) == 1 and len(slack) == 1
    assert mail["subject"].startswith(f"[staging] FAILED: bisman_rollback_application run {report.run_id} "
                                      "at switch_traffic")
    assert "clear it with its downstream tasks" in mail["text"]


def test_no_task_of_a_change_dag_notifies_on_its_own():
    """One notice per run: the report's. A per-task failure callback would add one per failed task."""
    import runpy
    from pathlib import Path

    dags = Path(__file__).resolve().parents[2] / "dags"
    for name in ("bisman_rollout", "bisman_rollback_application", "bisman_rollback_database",
                 "bisman_rollback_infrastructure"):
        dag = runpy.run_path(str(dags / f"{name}.py"))["dag"]
        assert not dag.on_failure_callback, name
        assert [t.task_id for t in dag.tasks if t.on_failure_callback] == [], name
        written = dag.get_task("write_run_report")
        assert written.op_kwargs.get("notify_team") is True, name
