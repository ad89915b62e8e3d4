"""The recurring DAGs as declared: a failed task fails the run, the team hears of it, every task
and run is bounded, and the deployment comes from its configuration. The notices go to the
sandbox's real mail and Slack sinks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from bisman_ops import config
from bisman_ops.notifiers import TeamNotifier
from bisman_ops.recurring import dag_parts, tasks
from bisman_sandbox import sinks

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
RECURRING = ("bisman_daily_usage_aggregation", "bisman_trial_expiry", "bisman_quota_alerts",
             "bisman_weekly_audit")


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    found = {}
    for dag_id in RECURRING:  # only these four files: parsing the others is not this suite's work
        bag = DagBag(dag_folder=str(DAGS_DIR / f"{dag_id}.py"))
        assert bag.import_errors == {}
        found[dag_id] = bag.dags[dag_id]
    return found


@pytest.mark.parametrize("dag_id", ["bisman_trial_expiry", "bisman_quota_alerts"])
def test_a_failed_task_fails_the_run_even_after_an_all_done_task(dags, dag_id):
    dag = dags[dag_id]
    leaves = [t for t in dag.tasks if not t.downstream_list]
    # The run's state is its leaves': the only leaf is the watcher, downstream of every task,
    # which runs when one of them failed (one_failed) and then fails.
    assert [t.task_id for t in leaves] == ["watcher"]
    watcher = leaves[0]
    assert watcher.trigger_rule == "one_failed"
    assert watcher.upstream_task_ids == {t.task_id for t in dag.tasks} - {"watcher"}
    assert any(t.trigger_rule == "all_done" for t in dag.tasks)  # what the watcher guards
    with pytest.raises(dag_parts.RunFailed):
        watcher.python_callable()


@pytest.mark.parametrize("dag_id", RECURRING)
def test_every_task_and_run_is_bounded_and_failures_reach_the_team(dags, dag_id):
    dag = dags[dag_id]
    assert dag.dagrun_timeout is not None and dag.dagrun_timeout <= timedelta(hours=3)
    assert any(isinstance(cb, dag_parts.RunTimeoutNotifier) for cb in _callbacks(dag.on_failure_callback))
    for t in dag.tasks:
        assert t.execution_timeout is not None and t.execution_timeout < dag.dagrun_timeout, t.task_id
        if t.task_id != "watcher":  # the failed task itself tells the team; the watcher does not repeat it
            assert any(isinstance(cb, TeamNotifier) for cb in _callbacks(t.on_failure_callback)), t.task_id
    if dag_id in ("bisman_trial_expiry", "bisman_quota_alerts"):
        assert dag.dagrun_timeout < timedelta(hours=1)  # over before the next hourly run is due


def _callbacks(cb):
    return cb if isinstance(cb, list) else [cb] if cb else []


def _context(exception: Exception | None = None, reason: str | None = None):
    ti = SimpleNamespace(dag_id="bisman_trial_expiry", task_id="end_expired_trials", run_id="scheduled__x",
                         log_url="")
    return {"ti": ti, "params": {}, "exception": exception, "reason": reason, "run_id": "scheduled__x"}


def test_a_task_failure_mails_and_posts_the_team_with_its_error(dags, ctx, mail_sink):
    notifier = next(cb for cb in _callbacks(dags["bisman_trial_expiry"].get_task(
        "end_expired_trials").on_failure_callback) if isinstance(cb, TeamNotifier))
    marker = "stripe-outage-7f3a"

    notifier.notify(_context(RuntimeError(f"Stripe reading subscriptions failed ({marker})")))

    mail = sinks.wait_for_mail(ctx, lambda m: marker in m["text"], timeout=10)
    assert "FAILED: bisman_trial_expiry.end_expired_trials" in mail["subject"]
    sinks.wait_for_slack(ctx, lambda p: marker in p["payload"].get("text", ""), timeout=10)


def test_a_run_timeout_is_told_and_a_run_failed_by_a_task_is_not_told_twice(ctx, mail_sink):
    notifier = dag_parts.run_args(timedelta(minutes=5))["on_failure_callback"]
    notifier.notify(_context(reason="task_failure"))
    assert sinks.captured_mail(ctx) == []
    notifier.notify({**_context(reason="timed_out"), "dag": SimpleNamespace(dag_id="bisman_trial_expiry")})
    sinks.wait_for_mail(ctx, lambda m: "dagrun_timeout" in m["text"], timeout=10)


def test_the_weekly_audit_has_no_environment_of_its_own(dags):
    assert "environment" not in dags["bisman_weekly_audit"].params
    assert "project_name" not in dags["bisman_weekly_audit"].params


def test_the_deployment_comes_from_its_configuration_and_is_never_guessed():
    names = config.deployment({"BISMAN_PROJECT_NAME": "acme-erp", "BISMAN_ENVIRONMENT": "prod"})
    assert (names.project_name, names.environment, names.state_bucket) == (
        "acme-erp", "prod", "acme-erp-prod-terraform-state")
    assert config.deployment({"BISMAN_ENVIRONMENT": "staging"}).project_name == "bisman-erp"
    with pytest.raises(ValueError, match="BISMAN_ENVIRONMENT is not set"):
        config.deployment({"BISMAN_PROJECT_NAME": "acme-erp"})
    with pytest.raises(ValueError, match="unknown environment"):
        config.deployment({"BISMAN_ENVIRONMENT": "production"})


def test_a_weekly_audit_without_a_configured_environment_fails_before_touching_anything(monkeypatch):
    monkeypatch.delenv("BISMAN_ENVIRONMENT", raising=False)
    with pytest.raises(ValueError, match="BISMAN_ENVIRONMENT is not set"):
        tasks.run_weekly_audit(None)
