"""Phase 5 in the rollout DAG: each check stands before the gate and the monitoring phase (a failed
check leaves them unrun), each smoke run waits deferred and lets a failed run through to the check
that names it, and in prod only the quota and trial runs hang on the customer-visible switch: no
test tenants, while the aggregation, the audit and the gate still run."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from bisman_ops.rollout import scheduled_jobs as jobs
from tests.rollout.dag_shape import unrun

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"
GROUP = "scheduled_jobs"
GATE = f"{GROUP}.scheduled_jobs_gate"
SWITCH = f"{GROUP}.customer_visible_smoke_runs_allowed"
CHECKS = ("recurring_dags_deployed", "recurring_dags_unpaused", "usage_aggregated_for_a_day",
          "weekly_audit_report_written", "quota_alert_sent_once", "trial_downgraded")
# Each smoke run: the DAG it triggers and the check that reads its run.
SMOKE_RUNS = {
    "daily_usage_aggregation_smoke_run": (jobs.DAILY_AGGREGATION, "usage_aggregated_for_a_day"),
    "weekly_audit_smoke_run": (jobs.WEEKLY_AUDIT, "weekly_audit_report_written"),
    "quota_alerts_smoke_run": (jobs.QUOTA_ALERTS, "quota_alert_sent_once"),
    "trial_expiry_smoke_run": (jobs.TRIAL_EXPIRY, "trial_downgraded"),
}
CUSTOMER_VISIBLE = ("quota_alerts_smoke_run", "trial_expiry_smoke_run")
TEAM_ONLY = ("daily_usage_aggregation_smoke_run", "weekly_audit_smoke_run")


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


def task(dag, name):
    return dag.task_dict[f"{GROUP}.{name}"]


def body(step_task):
    """The phase module's own function under a ``@step`` task (``functools.wraps`` keeps it)."""
    return step_task.function.__wrapped__


def monitoring(dag) -> list[str]:
    return [t.task_id for t in dag.tasks if t.task_id.startswith("monitoring.")]


@pytest.mark.parametrize("check", CHECKS)
def test_a_failed_check_leaves_the_gate_and_the_monitoring_phase_unrun(dag, check):
    after = {t.task_id for t in task(dag, check).get_flat_relatives(upstream=False)}
    later = [GATE, *monitoring(dag)]
    assert len(later) > 1 and set(later) <= after
    # By their trigger rules none of them runs past the failure (a teardown: none of its setups ran).
    stopped = unrun(dag, failed=(f"{GROUP}.{check}",))
    assert [t for t in later if t not in stopped] == []
    assert stopped[GATE] == "upstream_failed"


@pytest.mark.parametrize("smoke", SMOKE_RUNS)
def test_a_smoke_run_waits_deferred_and_a_failed_run_reaches_the_check_that_names_it(dag, smoke):
    op = task(dag, smoke)
    dag_id, check = SMOKE_RUNS[smoke]
    assert op.trigger_dag_id == dag_id and op.trigger_run_id == jobs.SMOKE_RUN_ID
    assert op.wait_for_completion and op.deferrable is True  # the triggerer waits, no worker slot
    # A run that ended failed is an allowed end, not a generic failure of this task ...
    assert "failed" in op.allowed_states and "failed" not in op.failed_states
    # ... so the check after it runs, reads the run and names the tasks that failed.
    assert f"{GROUP}.{check}" in op.downstream_task_ids


def test_in_prod_only_the_quota_and_trial_runs_hang_on_the_customer_visible_switch(dag):
    for smoke in CUSTOMER_VISIBLE:
        assert SWITCH in task(dag, smoke).upstream_task_ids, smoke
    for smoke in TEAM_ONLY:
        assert SWITCH not in {t.task_id for t in task(dag, smoke).get_flat_relatives(upstream=True)}, smoke
    assert body(jobs.customer_visible_smoke_runs_allowed)({"environment": "prod"}) is False
    assert body(jobs.customer_visible_smoke_runs_allowed)({"environment": "staging"}) is True


def test_in_prod_the_switch_skips_the_quota_and_trial_checks_and_the_rest_still_runs(dag):
    skipped = unrun(dag, skipped=tuple(f"{GROUP}.{s}" for s in CUSTOMER_VISIBLE))
    for smoke in CUSTOMER_VISIBLE:
        assert skipped[f"{GROUP}.{SMOKE_RUNS[smoke][1]}"] == "skipped", smoke
    ran = [f"{GROUP}.{name}" for name in (*TEAM_ONLY, *(SMOKE_RUNS[s][1] for s in TEAM_ONLY),
                                          "smoke_tenants_removed")]
    assert [t for t in (*ran, GATE, *monitoring(dag)) if t in skipped] == []


def test_no_smoke_tenants_are_created_in_prod(monkeypatch):
    def no_database():
        raise AssertionError("the application database was opened for prod")

    monkeypatch.setattr(jobs, "_connect", no_database)
    monkeypatch.setattr(jobs, "create_smoke_tenants", no_database)
    planned = body(jobs.smoke_tenants_planned)({"environment": "prod"})
    assert planned is None
    assert body(jobs.smoke_tenants_created)(planned) is None
    # ... so the teardown has nothing to remove, and does not open the database either.
    assert body(jobs.smoke_tenants_removed)(None) == {"removed": "no test tenants"}
