"""The four recurring DAGs run under a real Airflow against the sandbox: triggered through the
REST API as an operator would, and the daily aggregation also backfilled for past days through
POST /api/v2/backfills."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from bisman_ops import messaging
from bisman_sandbox import postgres, sinks
from bisman_sandbox.process import SandboxError

pytestmark = pytest.mark.timeout(900)

AGGREGATION = "bisman_daily_usage_aggregation"
TRIALS = "bisman_trial_expiry"
QUOTAS = "bisman_quota_alerts"
AUDIT = "bisman_weekly_audit"


@pytest.fixture(scope="module")
def dsn(sandbox) -> str:
    return postgres.dsn(sandbox, "primary")


def sql(dsn: str, query: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def tenant_ids(dsn):
    """Tenants of this module's own: one over its daily quota, one whose trial ended."""
    # Leftovers of an interrupted session would skew the month rows (their days count as aggregated).
    stale = [r[0] for r in sql(
        dsn, "SELECT id FROM tenants WHERE slug LIKE 'e2e-over-%%' OR slug LIKE 'e2e-trial-%%'")]
    sql(dsn, "DELETE FROM events WHERE tenant_id = ANY(%s)", (stale,))
    sql(dsn, "DELETE FROM bisman_ops_claims WHERE tenant_id = ANY(%s)", (stale,))
    sql(dsn, "DELETE FROM tenant_usage WHERE tenant_id = ANY(%s)", (stale,))
    sql(dsn, "DELETE FROM tenants WHERE id = ANY(%s)", (stale,))
    base = 870_000_000 + uuid.uuid4().int % 1_000_000 * 10
    over, trial = base + 1, base + 2
    sql(dsn, "INSERT INTO tenants (id, slug, name, plan, status, trial_ends_at, billing_email) VALUES "
             "(%s, %s, 'E2E over quota', 'free', 'active', NULL, %s), "
             "(%s, %s, 'E2E trial', 'pro', 'trialing', now() - interval '1 hour', %s)",
        (over, f"e2e-over-{over}", f"billing+e2e{over}@tenants.bisman.test",
         trial, f"e2e-trial-{trial}", f"billing+e2e{trial}@tenants.bisman.test"))
    yield {"over": over, "trial": trial}
    sql(dsn, "DELETE FROM events WHERE tenant_id = ANY(%s)", ([over, trial],))
    sql(dsn, "DELETE FROM bisman_ops_claims WHERE tenant_id = ANY(%s)", ([over, trial],))
    sql(dsn, "DELETE FROM tenant_usage WHERE tenant_id = ANY(%s)", ([over, trial],))
    sql(dsn, "DELETE FROM tenants WHERE id = ANY(%s)", ([over, trial],))


def delete_runs(airflow, dag_id: str, first: datetime, last: datetime) -> None:
    """Runs of earlier sessions with these logical dates would refuse a trigger or be reused by a backfill."""
    def stamp(moment):
        return moment.isoformat().replace("+00:00", "Z")

    window = {"logical_date_gte": stamp(first), "logical_date_lte": stamp(last)}
    earlier = airflow._call("GET", f"/dags/{dag_id}/dagRuns", params=window)["dag_runs"]
    for run in earlier:
        airflow.wait_for_run(dag_id, run["dag_run_id"], timeout=300)  # a running one cannot be deleted
        airflow._call("DELETE", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}")


def trigger_at(airflow, dag_id: str, logical_date: datetime | None = None, conf: dict | None = None) -> str:
    if logical_date is not None:
        delete_runs(airflow, dag_id, logical_date, logical_date)
    body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": conf or {},
            "dag_run_id": f"e2e__{uuid.uuid4().hex[:10]}"}
    return airflow._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]


def assert_succeeds(airflow, dag_id: str, run_id: str, timeout: float = 300) -> None:
    state = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    if state != "success":
        tis = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(dag_id, run_id)}
        raise AssertionError(f"{dag_id} run {run_id} ended {state}: {tis}")


@pytest.fixture(scope="module")
def dags_ready(airflow):
    for dag_id in (AGGREGATION, TRIALS, QUOTAS, AUDIT):
        airflow.wait_for_dag(dag_id, timeout=180)
        airflow.unpause(dag_id)  # new DAGs start paused; their runs would stay queued
    assert not [e for e in airflow.import_errors() if "bisman" in e.get("filename", "")]
    return airflow


def test_daily_aggregation_runs_and_backfills_past_days_in_their_own_data_interval(dags_ready, dsn,
                                                                                      tenant_ids):
    airflow = dags_ready
    t = tenant_ids["over"]
    days = [date(2026, 2, 24), date(2026, 2, 27), date(2026, 2, 28)]
    for i, d in enumerate(days):
        sql(dsn, "INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity) VALUES (%s, %s, "
                 "'api_calls', %s) ON CONFLICT DO NOTHING", (t, d, 100 * (i + 1)))

    # A manual run at 2026-02-25 02:00 covers the interval that ended then, [24th 02:00, 25th 02:00),
    # so it aggregates the 24th, as the scheduled run at that time would.
    run_id = trigger_at(airflow, AGGREGATION, datetime(2026, 2, 25, 2, tzinfo=UTC))
    assert_succeeds(airflow, AGGREGATION, run_id)
    rows = sql(dsn, "SELECT period, period_start, quantity FROM tenant_usage WHERE tenant_id = %s "
                    "ORDER BY 1, 2", (t,))
    assert rows == [("day", date(2026, 2, 24), 100), ("month", date(2026, 2, 1), 100)]

    # Backfill the 27th and 28th (newest first, to show the order does not matter): logical dates
    # 27th and 28th 02:00, the starts of the intervals that hold those days.
    delete_runs(airflow, AGGREGATION, datetime(2026, 2, 27, tzinfo=UTC),
                datetime(2026, 2, 28, 23, tzinfo=UTC))
    backfill = airflow._call("POST", "/backfills", json={
        "dag_id": AGGREGATION, "from_date": "2026-02-27T00:00:00Z", "to_date": "2026-02-28T23:00:00Z",
        "run_backwards": True, "max_active_runs": 1, "reprocess_behavior": "completed"})
    deadline = time.monotonic() + 600
    while airflow._call("GET", f"/backfills/{backfill['id']}")["completed_at"] is None:
        if time.monotonic() > deadline:
            raise SandboxError(f"backfill {backfill['id']} of {AGGREGATION} not complete after 600 s")
        time.sleep(3)
    runs = airflow._call("GET", f"/dags/{AGGREGATION}/dagRuns?run_type=backfill&limit=50")["dag_runs"]
    mine = [r for r in runs if r["logical_date"][:10] in ("2026-02-27", "2026-02-28")]
    assert sorted(r["state"] for r in mine) == ["success", "success"]

    rows = sql(dsn, "SELECT period, period_start, quantity FROM tenant_usage WHERE tenant_id = %s "
                    "ORDER BY 1, 2", (t,))
    assert rows == [("day", date(2026, 2, 24), 100), ("day", date(2026, 2, 27), 200),
                    ("day", date(2026, 2, 28), 300), ("month", date(2026, 2, 1), 600)]


def test_quota_alerts_alert_the_tenant_and_the_team_once(dags_ready, dsn, tenant_ids, sandbox):
    airflow = dags_ready
    t = tenant_ids["over"]
    # A run at a fixed moment (its data interval ends there): the day it evaluates is this one,
    # whatever the clock says when the test runs (no midnight between the insert and the run).
    at = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    today = at.date()
    sql(dsn, "INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity) VALUES (%s, %s, "
             "'api_calls', 1500) ON CONFLICT (tenant_id, usage_date, metric) DO UPDATE SET quantity = 1500",
        (t, today))

    first = trigger_at(airflow, QUOTAS, at)
    assert_succeeds(airflow, QUOTAS, first)
    second = trigger_at(airflow, QUOTAS, at + timedelta(minutes=1))
    assert_succeeds(airflow, QUOTAS, second)

    keys = sql(dsn, "SELECT dedup_key FROM events WHERE tenant_id = %s AND type = 'quota.alert'", (t,))
    assert keys == [(f"quota.alert:{t}:api_calls:day:{today}:100",)]
    to = f"billing+e2e{t}@tenants.bisman.test"
    sinks.wait_for_mail(sandbox, lambda m: m["to"] == [to], timeout=30)
    summary = sinks.wait_for_mail(
        sandbox,
        lambda m: m["subject"].startswith("[bisman-ops] quota alerts") and f"e2e-over-{t}" in m["text"],
        timeout=30)
    assert summary["to"] == messaging.team_recipients()
    sinks.wait_for_slack(sandbox, lambda p: f"e2e-over-{t}" in p["payload"].get("text", ""), timeout=30)
    assert len([m for m in sinks.captured_mail(sandbox) if m["to"] == [to]]) == 1


def test_trial_expiry_downgrades_the_ended_trial_and_mails_it_once(dags_ready, dsn, tenant_ids, sandbox):
    airflow = dags_ready
    t = tenant_ids["trial"]
    for _ in range(2):
        run_id = trigger_at(airflow, TRIALS)
        assert_succeeds(airflow, TRIALS, run_id)

    assert sql(dsn, "SELECT plan, status FROM tenants WHERE id = %s", (t,)) == [("free", "active")]
    assert sql(dsn, "SELECT type FROM events WHERE tenant_id = %s ORDER BY id", (t,)) == [
        ("trial.expired",), ("trial.notified",)]
    to = f"billing+e2e{t}@tenants.bisman.test"
    sinks.wait_for_mail(sandbox, lambda m: m["to"] == [to], timeout=30)
    assert len([m for m in sinks.captured_mail(sandbox) if m["to"] == [to]]) == 1


def test_weekly_audit_writes_its_report_to_s3_and_mails_the_team(dags_ready, dsn, sandbox):
    from bisman_sandbox import aws

    airflow = dags_ready
    run_at = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a fixed Wednesday: it audits the week before
    year, week, _ = (run_at.date() - timedelta(days=7)).isocalendar()
    label = f"{year}-W{week:02d}"
    sql(dsn, "DELETE FROM events WHERE dedup_key = %s", (f"audit.completed:{label}",))
    sql(dsn, "DELETE FROM bisman_ops_claims WHERE dedup_key = %s", (f"audit.completed:{label}",))

    run_id = trigger_at(airflow, AUDIT, run_at)
    assert_succeeds(airflow, AUDIT, run_id)

    s3 = aws.client(sandbox, "s3")
    bucket = aws.names().state_bucket
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"reports/audit/{label}/")["Contents"]}
    assert keys == {f"reports/audit/{label}/report.json", f"reports/audit/{label}/report.md"}
    announced = sql(dsn, "SELECT count(*) FROM events WHERE dedup_key = %s", (f"audit.completed:{label}",))
    assert announced == [(1,)]
    sinks.wait_for_mail(sandbox, lambda m: m["subject"].startswith(f"[bisman-ops] weekly audit {label}"),
                        timeout=30)
