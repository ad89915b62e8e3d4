"""The usage meter and quota enforcement for tenant requests.

Every authenticated tenant request counts one ``api_calls`` into ``client_daily_usage`` (UTC
day). A request made when the tenant is already at or over its day or month quota is refused
(429) and not counted, so a tenant with a quota of N gets exactly N calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from bisman_sandbox.app import db
from bisman_sandbox.app.queries import sql
from bisman_sandbox.app.settings import Settings

METERED_METRIC = "api_calls"


@dataclass(frozen=True)
class MeterResult:
    tenant_exists: bool
    breach_period: str | None = None
    breach_quota: int | None = None
    breach_usage: int | None = None
    day_quantity: int | None = None

    @property
    def over_quota(self) -> bool:
        return self.breach_period is not None


def meter_request(settings: Settings, tenant_id: int) -> MeterResult:
    """Check the tenant's api_calls quotas and count this request, in one statement on the primary."""
    with db.connect(settings) as conn:
        row = conn.execute(
            sql("meter_request"),
            {
                "tenant_id": tenant_id,
                "metric": METERED_METRIC,
                "enforce": settings.quota_enforcement_enabled,
                "count": settings.usage_meter_enabled,
            },
        ).fetchone()
    return MeterResult(**row)


def quota_status(settings: Settings, tenant_id: int) -> list[dict]:
    """Usage against effective quotas, one row per metric and period (quota None: unlimited)."""
    with db.connect(settings) as conn:
        rows = conn.execute(sql("quota_status"), {"tenant_id": tenant_id}).fetchall()
    return [
        {
            "metric": r["metric"],
            "period": r["period"],
            "period_start": r["period_start"].isoformat(),
            "usage": int(r["usage"]),
            "quota": r["quota"],
            "remaining": None if r["quota"] is None else max(r["quota"] - int(r["usage"]), 0),
            "overridden": r["overridden"],
        }
        for r in rows
    ]
