"""Notifications reach the team by email and Slack, saying what failed and what to do, without
secrets."""

from __future__ import annotations

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
