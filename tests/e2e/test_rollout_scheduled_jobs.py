"""Phase 5 (``scheduled_jobs``) end to end on the session's Airflow, whose DAG folder holds the four
recurring DAGs next to the rollout.

In the approved rehearsal the phase unpaused the four, smoke-ran each, verified its effect (the
quota alert's mail reached the SMTP sink once) and removed its test tenants. The refusal path runs
the phase's own function against this Airflow's REST API: a paused recurring DAG without permission
to unpause fails naming it and unpauses nothing.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.clients.airflow_api import AirflowApi
from bisman_ops.rollout import scheduled_jobs as jobs
from bisman_sandbox import postgres
from bisman_sandbox.airflow_local import ADMIN_USER, AirflowLocal
from tests.e2e.rollout_runs import DAG_ID, steps

pytestmark = pytest.mark.timeout(2400)

GROUP = "scheduled_jobs"
EFFECTS = ("usage_aggregated_for_a_day", "weekly_audit_report_written", "quota_alert_sent_once",
           "trial_downgraded")


def smoke_tenants(sandbox) -> list[tuple]:
    with psycopg.connect(postgres.dsn(sandbox), autocommit=True) as conn:
        return conn.execute("SELECT id, slug FROM tenants WHERE slug LIKE %s",
                            (jobs.SMOKE_SLUG_PREFIX + "%",)).fetchall()


def test_phase_unpauses_smoke_runs_each_job_and_verifies_its_effect(rollout, rehearsal, sandbox):
    st = rehearsal.states
    for task_id in ("usage_aggregated_for_a_day", "weekly_audit_report_written", "quota_alert_sent_once",
                    "trial_downgraded", "smoke_tenants_removed", "scheduled_jobs_gate"):
        assert st[f"{GROUP}.{task_id}"] == "success", task_id
    for dag_id in jobs.RECURRING_DAGS:
        smoke = rollout.run(dag_id, jobs.smoke_run_id(rehearsal.run_id))
        assert smoke["state"] == "success", dag_id

    quota = rollout._call("GET", f"/dags/{DAG_ID}/dagRuns/{rehearsal.run_id}/taskInstances/"
                                 f"{GROUP}.quota_alert_sent_once/xcomEntries/return_value?deserialize=true")["value"]
    assert quota["alerts"] == 1
    to_tenant = [m for m in rehearsal.mail if jobs.SMOKE_SLUG_PREFIX in json.dumps(m.get("to"))
                 and "over-quota" in json.dumps(m.get("to"))]
    assert len(to_tenant) == 1, to_tenant  # the alert's mail arrived, once
    assert smoke_tenants(sandbox) == []  # the teardown removed them


def test_the_report_shows_each_smoke_runs_effect(rehearsal):
    measured = steps(rehearsal.report)
    effects = {name: measured[f"{GROUP}.{name}"] for name in EFFECTS}
    for name, effect in effects.items():
        assert effect["run"]["state"] == "success", name
        assert effect["run"]["run_id"] == jobs.smoke_run_id(rehearsal.run_id), name

    aggregated = effects["usage_aggregated_for_a_day"]
    assert aggregated["day"] and aggregated["tenant_usage_day_rows"] > 0
    # The run's day is one of the two seeded for the usage tenant, aggregated to the same count.
    assert aggregated["test_tenant_seeded"] in jobs.SMOKE_SEEDED_USAGE
    assert aggregated["test_tenant_aggregated"] == aggregated["test_tenant_seeded"]

    audit = effects["weekly_audit_report_written"]
    assert audit["week"] and set(audit["reports"]) == {"report.json", "report.md"}
    assert all(r["uri"].startswith("s3://") and r["bytes"] > 0 for r in audit["reports"].values())

    quota = effects["quota_alert_sent_once"]
    assert quota["alerts"] == 1 and int(quota["payloads"][0]["threshold"]) == 100

    trial = effects["trial_downgraded"]
    assert trial["plan"] == "free" and trial["status"] != "trialing" and "trial.expired" in trial["events"]


@pytest.fixture
def api(rollout):
    local = AirflowLocal.from_env()
    client = AirflowApi(local.url, ADMIN_USER, local.password())
    before = {dag_id: rollout._call("GET", f"/dags/{dag_id}")["is_paused"] for dag_id in jobs.RECURRING_DAGS}
    yield client
    for dag_id, was_paused in before.items():
        rollout._call("PATCH", f"/dags/{dag_id}", json={"is_paused": was_paused})


def test_a_paused_recurring_dag_without_permission_is_named_and_nothing_is_unpaused(rollout, api):
    for dag_id in jobs.RECURRING_DAGS:
        rollout._call("PATCH", f"/dags/{dag_id}", json={"is_paused": dag_id == jobs.TRIAL_EXPIRY})
    deployed, problems = jobs.deployment_state({d: api.dag(d) for d in jobs.RECURRING_DAGS},
                                               api.import_errors(), jobs.expected_schedules())
    assert problems == []
    with pytest.raises(CheckFailed) as refused:
        jobs.ensure_unpaused(api, deployed, allowed=False)
    assert refused.value.seen == f"paused: {jobs.TRIAL_EXPIRY}"
    assert rollout._call("GET", f"/dags/{jobs.TRIAL_EXPIRY}")["is_paused"] is True

    done = jobs.ensure_unpaused(api, deployed, allowed=True)  # allowed, it unpauses through the API
    assert done["unpaused"] == [jobs.TRIAL_EXPIRY]
    assert rollout._call("GET", f"/dags/{jobs.TRIAL_EXPIRY}")["is_paused"] is False


def test_the_api_client_reads_every_task_of_a_run_larger_than_one_page(api, rehearsal):
    """The rollout has more tasks than the API's 100 per page: none may go missing."""
    got = {t["task_id"]: t["state"] for t in api.task_instances("bisman_rollout", rehearsal.run_id)}
    assert len(got) == len(rehearsal.states) > 100
    assert got["chaos.chaos_gate"] == "success"
    assert got["write_run_report"] == rehearsal.states["write_run_report"]
