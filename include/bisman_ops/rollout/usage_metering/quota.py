"""Quota enforcement seen by a tenant: ``GET /api/usage/quota`` with its bearer token shows its usage
against its quotas, and once it is pushed past its day quota a metered call is refused with 429 while
the quota endpoint (the refusal's body, and the last answer before it) agrees with the database.

The application meters every authenticated tenant call, the quota endpoint's own included, so the
check pushes with that endpoint and never retries a call (a retry would be counted twice).
"""

from __future__ import annotations

from typing import Any

from bisman_ops.change.errors import fail_unless

QUOTA_PATH = "/api/usage/quota"
METRIC = "api_calls"


def _day(body: dict[str, Any]) -> dict[str, Any]:
    return ((body.get("quotas") or {}).get(METRIC) or {}).get("day") or {}


def push_past_quota(http: Any, token: str, limit: int) -> list[dict[str, Any]]:
    """Call the quota endpoint until it refuses (at most ``limit + 2`` calls): ``[{status, body}]``."""
    answers = []
    for _ in range(limit + 2):
        r = http("GET", QUOTA_PATH, headers={"Authorization": f"Bearer {token}"})
        try:
            body = r.json()
        except ValueError:
            body = {"text": r.text[:200]}
        answers.append({"status": r.status_code, "body": body})
        if r.status_code != 200:
            break
    return answers


def quota_verdict(tenant_id: int, limit: int, answers: list[dict[str, Any]], db_usage: int) -> dict[str, Any]:
    ok = [a for a in answers if a["status"] == 200]
    refused = next((a for a in answers if a["status"] == 429), None)
    first, last_ok = (ok[0]["body"] if ok else {}), (ok[-1]["body"] if ok else {})
    measured: dict[str, Any] = {
        "tenant_id": tenant_id, "day_quota": limit, "statuses": [a["status"] for a in answers],
        "first_answer_day": _day(first), "last_200_day": _day(last_ok),
        "refusal": {k: (refused or {}).get("body", {}).get(k)
                    for k in ("metric", "period", "quota", "usage")},
        "client_daily_usage": db_usage,
    }
    problems = []
    if not ok:
        first_status = answers[0]["status"] if answers else "nothing"
        problems.append(f"GET {QUOTA_PATH} answered {first_status} at once, "
                        "expected 200 with the tenant's quotas")
    else:
        if first.get("tenant_id") != tenant_id:
            problems.append(f"GET {QUOTA_PATH} answered for tenant {first.get('tenant_id')}, not {tenant_id}")
        if _day(first).get("quota") != limit:
            problems.append(f"GET {QUOTA_PATH} shows a day quota of {_day(first).get('quota')}, the tenant's "
                            f"override is {limit}")
        if _day(last_ok).get("usage") != db_usage or _day(last_ok).get("remaining") != 0:
            problems.append(f"the last 200 showed usage {_day(last_ok).get('usage')}, remaining "
                            f"{_day(last_ok).get('remaining')}; client_daily_usage has {db_usage}, so "
                            "expected that usage with 0 remaining")
    if refused is None:
        problems.append(f"no 429 after {len(answers)} calls with a day quota of {limit} (statuses "
                        f"{measured['statuses']})")
    else:
        r = measured["refusal"]
        if r["period"] != "day" or r["quota"] != limit or (r["usage"] or 0) < limit:
            problems.append(f"the 429 says {r}, expected period day, quota {limit}, usage >= {limit}")
    if db_usage != limit:
        problems.append(f"client_daily_usage counts {db_usage} calls, expected exactly the quota {limit} "
                        "(refused calls are not counted)")
    fail_unless(problems, f"quota enforcement for test tenant {tenant_id}",
                f"200s up to the day quota of {limit}, then 429, and the quota endpoint agreeing",
                "Check QUOTA_ENFORCEMENT_ENABLED and the application's quota middleware, then clear this "
                "task",
                measured)
    return measured
