"""Phase 3 (``usage_metering``) end to end: ``bisman_rollout`` triggered through the REST API with
the sandbox's form (a short load test), the plan approved as in the UI; the phase's checks all pass
and the run report shows what they measured. Expensive (the whole rollout up to phase 3 and beyond
on the session's Airflow): one run."""

from __future__ import annotations

import pytest

from bisman_sandbox import postgres
from tests.e2e.test_rollout import DAG_ID, approve, form, report, states

pytestmark = pytest.mark.timeout(2400)

GROUP = "usage_metering"
GATE = f"{GROUP}.usage_metering_gate"
PHASE_TIMEOUT = 1800  # phases 1-3 on a loaded 2-core machine
RUN_TIMEOUT = 2400  # the later phases too: the report is written when the run ends


@pytest.fixture(scope="module")
def af(airflow):
    airflow.wait_for_dag(DAG_ID, timeout=900)
    assert airflow.import_errors() == []
    airflow.unpause(DAG_ID)
    return airflow


def test_usage_metering_passes_with_exact_metering_and_enforced_quotas_and_leaves_no_test_tenant(af, sandbox):
    run_id = af.trigger(DAG_ID, form(sandbox))
    approve(af, run_id)
    af.wait_for_task_state(DAG_ID, run_id, GATE, ("success", "failed", "upstream_failed"),
                           timeout=PHASE_TIMEOUT)
    af.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)  # whatever the later phases do
    af.wait_for_task_state(DAG_ID, run_id, "write_run_report", ("success", "failed", "skipped"), timeout=300)
    st = states(af, run_id)
    ours = {t: s for t, s in st.items() if t.startswith(f"{GROUP}.")}
    assert ours and all(s == "success" for s in ours.values()), ours
    assert st["read_replica.read_replica_gate"] == "success"

    rep, markdown = report(sandbox, run_id)
    steps = {r[0]: r[2] for r in next(s for s in rep["sections"]
                                      if s["title"] == "Checks and gate measurements")["tables"][0]["rows"]}
    flags = steps[f"{GROUP}.meter_settings_enabled"]["flags"]
    assert flags == {"USAGE_METER_ENABLED": "enabled", "QUOTA_ENFORCEMENT_ENABLED": "enabled"}
    migrated = steps[f"{GROUP}.migrations_succeeded"]
    assert migrated["exit_code"] == 0 and migrated["log_lines"]
    load = steps[f"{GROUP}.load_test_within_thresholds"]
    assert load["users"] == 5 and load["requests"] > 0 and load["p95_ms"] is not None
    assert all(t["passed"] for t in load["thresholds"])
    metering = steps[f"{GROUP}.metering_exact"]
    assert metering["requests_metered_by_load_test"] == metering["client_daily_usage_growth"] > 0
    assert steps[f"{GROUP}.quota_enforced"]["statuses"][-1] == 429
    titles = [s["title"] for s in rep["sections"]]
    assert "Load test" in titles and "Metering" in titles
    assert "p(95) <" in markdown

    with postgres.connect(postgres.dsn(sandbox, "primary")) as conn:
        left = conn.execute("SELECT count(*) FROM tenants WHERE slug LIKE 'rollout-usage-%'").fetchone()[0]
    assert left == 0
