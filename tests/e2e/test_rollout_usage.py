"""Phase 3 (``usage_metering``) end to end, read from the session's approved rehearsal (the sandbox's
form runs a short load test): the phase's checks all pass, the run report shows what they measured,
and no test tenant is left behind."""

from __future__ import annotations

import pytest

from bisman_sandbox import postgres
from tests.e2e.rollout_runs import steps

pytestmark = pytest.mark.timeout(2400)

GROUP = "usage_metering"


def test_usage_metering_passes_with_exact_metering_and_enforced_quotas_and_leaves_no_test_tenant(
        rehearsal, sandbox):
    ours = {t: s for t, s in rehearsal.states.items() if t.startswith(f"{GROUP}.")}
    assert ours and all(s == "success" for s in ours.values()), ours

    measured = steps(rehearsal.report)
    flags = measured[f"{GROUP}.meter_settings_enabled"]["flags"]
    assert flags == {"USAGE_METER_ENABLED": "enabled", "QUOTA_ENFORCEMENT_ENABLED": "enabled"}
    migrated = measured[f"{GROUP}.migrations_succeeded"]
    assert migrated["exit_code"] == 0 and migrated["log_lines"]
    load = measured[f"{GROUP}.load_test_within_thresholds"]
    assert load["users"] == 5 and load["requests"] > 0 and load["p95_ms"] is not None
    assert all(t["passed"] for t in load["thresholds"])
    metering = measured[f"{GROUP}.metering_exact"]
    assert metering["requests_metered_by_load_test"] == metering["client_daily_usage_growth"] > 0
    assert measured[f"{GROUP}.quota_enforced"]["statuses"][-1] == 429
    titles = [s["title"] for s in rehearsal.report["sections"]]
    assert "Load test" in titles and "Metering" in titles
    assert "p(95) <" in rehearsal.markdown

    with postgres.connect(postgres.dsn(sandbox, "primary")) as conn:
        left = conn.execute("SELECT count(*) FROM tenants WHERE slug LIKE 'rollout-usage-%'").fetchone()[0]
    assert left == 0
