"""Phase 5's test tenants and effect checks against the sandbox's real PostgreSQL (no scheduler):
the seeded day aggregated by the real job passes, a job that did nothing is named, and the
teardown leaves nothing behind."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from psycopg.rows import dict_row

from bisman_ops.change.errors import CheckFailed
from bisman_ops.recurring import usage_aggregation
from bisman_ops.rollout import scheduled_jobs as jobs
from bisman_sandbox import postgres


@pytest.fixture
def conn(sandbox):
    with psycopg.connect(postgres.dsn(sandbox), autocommit=True) as c:
        yield c


@pytest.fixture
def tenants(conn, request):
    made = jobs.create_smoke_tenants(conn, f"test-{request.node.name}")
    as_xcom = {"usage": made.usage, "over_quota": made.over_quota, "trial_ended": made.trial_ended,
               "seeded": made.seeded, "ids": made.ids}
    yield as_xcom
    jobs.remove_smoke_tenants(conn, made.ids)


def test_the_seeded_day_aggregated_by_the_job_passes(sandbox, conn, tenants):
    day = max(tenants["seeded"])
    with psycopg.connect(postgres.dsn(sandbox), autocommit=True, row_factory=dict_row) as job_conn:
        result = usage_aggregation.aggregate_day(job_conn, date.fromisoformat(day))
    measured = jobs.aggregation_effect(conn, {"day": result.day.isoformat()}, tenants)
    assert measured["test_tenant_aggregated"] == tenants["seeded"][day]


def test_a_day_not_aggregated_is_named(conn, tenants):
    day = min(tenants["seeded"])
    conn.execute("DELETE FROM tenant_usage WHERE tenant_id = %s", (tenants["usage"],))
    with pytest.raises(CheckFailed) as failed:
        jobs.aggregation_effect(conn, {"day": day}, tenants)
    assert f"test tenant {tenants['usage']}: tenant_usage day row missing, seeded" in failed.value.seen


def test_no_quota_alert_and_a_trial_not_ended_are_named(conn, tenants):
    with pytest.raises(CheckFailed, match=r"0 quota.alert events for test tenant"):
        jobs.quota_effect(conn, tenants, None)
    with pytest.raises(CheckFailed) as failed:
        jobs.trial_effect(conn, tenants)
    assert f"test tenant {tenants['trial_ended']} is trialing on pro" in failed.value.seen


def test_a_retry_replaces_its_own_tenants_and_the_teardown_removes_everything(conn, request):
    run_id = f"test-{request.node.name}"
    first = jobs.create_smoke_tenants(conn, run_id)
    again = jobs.create_smoke_tenants(conn, run_id)
    assert again.ids == first.ids
    conn.execute("INSERT INTO events (tenant_id, type, payload, occurred_at) "
                 "VALUES (%s, 'quota.alert', '{}', now())", (first.over_quota,))
    removed = jobs.remove_smoke_tenants(conn, first.ids)
    assert removed["tenants"] == 3 and removed["events"] == 1
    left = conn.execute("SELECT (SELECT count(*) FROM tenants WHERE id = ANY(%(i)s)),"
                        " (SELECT count(*) FROM client_daily_usage WHERE tenant_id = ANY(%(i)s)),"
                        " (SELECT count(*) FROM tenant_quotas WHERE tenant_id = ANY(%(i)s))",
                        {"i": first.ids}).fetchone()
    assert left == (0, 0, 0)
