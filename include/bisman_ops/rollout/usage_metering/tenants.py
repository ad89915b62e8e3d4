"""The test tenants of the usage checks: created for the checks, removed after them (the DAG's
teardown), never mistaken for real ones.

Ids come from a range no real tenant uses (``TEST_ID_BASE`` up), derived from the run, so a retry
of the same run reuses them; slugs start ``rollout-usage-``, and removal deletes only such slugs.
No billing e-mail: the quota alerts never mail a test tenant.

- ``load-N``: unlimited ``api_calls`` (a NULL override), the load test's tenants;
- ``limited``: a small day quota, so the load test's expected 429s are real ones;
- ``quota``: the quota check's tenant, pushed past a day quota of ``QUOTA_CHECK_LIMIT``;
- ``probe``: unlimited, the monitoring phase's source of live per-tenant traffic (``probe``).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from bisman_ops.change.errors import fail_unless

SQL_DIR = Path(__file__).with_name("sql")
TEST_ID_BASE = 9_000_000_000_000
SLUG_PREFIX = "rollout-usage-"
METRIC = "api_calls"
LOAD_TENANTS = 3
LIMITED_DAY_QUOTA = 10
QUOTA_CHECK_LIMIT = 3


def _run_key(run_id: str) -> tuple[int, int]:
    """A run's key and the first of its ten test tenant ids (so a retry reuses them)."""
    key = zlib.crc32(run_id.encode()) % 100_000_000
    return key, TEST_ID_BASE + key * 10


def planned(run_id: str) -> list[dict[str, Any]]:
    """The test tenants of a run: id, slug, role and day quota (None: unlimited)."""
    key, base = _run_key(run_id)
    roles = [("limited", LIMITED_DAY_QUOTA), *((f"load-{i}", None) for i in range(1, LOAD_TENANTS + 1)),
             ("quota", QUOTA_CHECK_LIMIT)]
    return [{"id": base + i, "slug": f"{SLUG_PREFIX}{key:08d}-{role}", "role": role, "day_quota": quota}
            for i, (role, quota) in enumerate(roles)]


def probe(run_id: str) -> dict[str, Any]:
    """The monitoring phase's probe tenant of a run: in the same range, after the usage checks' ids."""
    key, base = _run_key(run_id)
    return {"id": base + 9, "slug": f"{SLUG_PREFIX}{key:08d}-probe", "role": "probe", "day_quota": None}


def create(conn: Any, tenants: list[dict[str, Any]]) -> None:
    """Create (or reset) the tenants with their quotas and no usage, in one transaction."""
    ids = [t["id"] for t in tenants]
    with conn.transaction():
        for t in tenants:
            conn.execute((SQL_DIR / "create_test_tenant.sql").read_text(),
                         {"id": t["id"], "slug": t["slug"], "name": f"Rollout usage check {t['role']}",
                          "plan": "pro"})
        conn.execute("DELETE FROM client_daily_usage WHERE tenant_id = ANY(%s)", (ids,))
        conn.execute("DELETE FROM tenant_quotas WHERE tenant_id = ANY(%s)", (ids,))
        for t in tenants:
            # A NULL quota is an unlimited override of the plan's limits, day and month.
            conn.execute("INSERT INTO tenant_quotas (tenant_id, metric, period, quota) VALUES "
                         "(%(id)s, %(metric)s, 'day', %(quota)s), (%(id)s, %(metric)s, 'month', NULL)",
                         {"id": t["id"], "metric": METRIC, "quota": t["day_quota"]})


def remove(conn: Any, ids: list[int]) -> dict[str, int]:
    with conn.transaction():
        tenants, usage, events = conn.execute((SQL_DIR / "remove_test_tenants.sql").read_text(),
                                              {"ids": ids}).fetchone()
    return {"tenants_removed": tenants, "tenant_usage_rows_removed": usage, "events_removed": events}


def metered(conn: Any, ids: list[int]) -> dict[int, int]:
    """``{tenant id: api_calls}`` summed over all of each tenant's ``client_daily_usage`` rows."""
    rows = conn.execute("SELECT tenant_id, COALESCE(sum(quantity), 0)::bigint FROM client_daily_usage "
                        "WHERE tenant_id = ANY(%s) AND metric = %s GROUP BY tenant_id",
                        (ids, METRIC)).fetchall()
    counts = {int(i): 0 for i in ids}
    counts.update({int(i): int(q) for i, q in rows})
    return counts


# Responses the meter does not count: no answer, no valid tenant, refused over quota, meter down.
NOT_METERED = ("0", "401", "403", "429", "503")


def metering_verdict(before: dict[str, int], per_tenant: dict[str, dict[str, int]],
                     after: dict[int, int]) -> tuple[dict[str, Any], list[list[int]]]:
    """Each tenant's metered calls (its responses by status) against the growth of its usage rows;
    CheckFailed naming every tenant where they differ. Returns the totals and one row per tenant."""
    rows, problems = [], []
    for key, was in before.items():
        tenant_id = int(key)
        made = sum(n for status, n in per_tenant.get(key, {}).items() if status not in NOT_METERED)
        growth = after[tenant_id] - int(was)
        rows.append([tenant_id, made, growth])
        if made != growth:
            problems.append(f"tenant {tenant_id}: the load test made {made} metered calls, "
                            f"client_daily_usage grew by {growth}")
    measured = {"requests_metered_by_load_test": sum(r[1] for r in rows),
                "client_daily_usage_growth": sum(r[2] for r in rows), "tenants": len(rows)}
    fail_unless(problems, "metering of the load test's calls",
                "each tenant's usage growth equal to its calls",
                "Check USAGE_METER_ENABLED and the usage meter's writes (the application's logs), then "
                "clear load_test_within_thresholds", {**measured, "per_tenant": rows})
    return measured, rows
