"""Quota alerts: usage against each tenant's effective quota, alerted once per threshold and period.

``find_alerts`` is one set-based query (``quota_alert_candidates.sql``) streamed through a
server-side cursor; ``send_alerts`` records each as a ``quota.alert`` event exactly when its mail
went out (``claims``). The team summary is built afterwards from what this run recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg

from bisman_ops.recurring import claims, db

EVENT_TYPE = "quota.alert"
SUMMARY_EVENT_TYPE = "quota.alert_summary"
DEFAULT_THRESHOLDS = (80, 100)
FETCH_SIZE = 2000


@dataclass(frozen=True, slots=True)
class QuotaAlert:
    dedup_key: str
    tenant_id: int
    slug: str
    name: str
    billing_email: str | None
    metric: str
    period: str
    period_start: date
    quota: int
    used: int
    threshold: int

    @property
    def percent(self) -> float | None:
        """Usage as a percentage of the quota; None for a quota of 0 (any usage is over it)."""
        return round(100.0 * self.used / self.quota, 1) if self.quota else None

    def payload(self, run_id: str) -> dict:
        return {
            "run_id": run_id, "metric": self.metric, "period": self.period,
            "period_start": self.period_start.isoformat(), "threshold": self.threshold,
            "quota": self.quota, "used": self.used, "percent": self.percent,
            "slug": self.slug, "emailed_to": self.billing_email,
        }


@dataclass
class QuotaAlertResult:
    run_id: str
    today: date
    candidates: int = 0
    sent: int = 0
    already_recorded: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def validate_thresholds(thresholds) -> tuple[int, ...]:
    values = tuple(sorted({int(t) for t in thresholds}))
    if not values or any(t <= 0 or t > 1000 for t in values):
        raise ValueError(f"quota thresholds {thresholds!r}: expected percentages in 1..1000")
    return values


def find_alerts(conn: psycopg.Connection, as_of: datetime, thresholds=DEFAULT_THRESHOLDS, *,
                tenant_ids: list[int] | None = None) -> Iterator[QuotaAlert]:
    """Alerts due at ``as_of`` and not yet recorded, in ``dedup_key`` order, streamed.

    Runs in its own read transaction on ``conn`` (a server-side cursor lives inside one), so pass
    a connection not used for writing meanwhile.
    """
    today = as_of.astimezone(UTC).date()
    params = {"today": today, "month_start": today.replace(day=1),
              "thresholds": list(validate_thresholds(thresholds)), "tenant_ids": tenant_ids}
    with conn.transaction(), conn.cursor(name=f"quota_alerts_{uuid.uuid4().hex[:12]}") as cur:
        cur.itersize = FETCH_SIZE
        cur.execute(db.sql("quota_alert_candidates"), params)
        for row in cur:
            yield QuotaAlert(**row)


def send_alerts(read_conn: psycopg.Connection, write_conn: psycopg.Connection, as_of: datetime,
                send: Callable[[QuotaAlert], None], *, run_id: str, thresholds=DEFAULT_THRESHOLDS,
                batch_size: int = 200, tenant_ids: list[int] | None = None) -> QuotaAlertResult:
    """Find the due alerts and deliver each with ``send``, recording it only once delivered.

    A tenant without a billing email is recorded without a mail (the team summary still shows
    it). ``send`` failures are counted in the result, not raised: the caller decides.
    ``tenant_ids`` limits the run to those tenants (tests, a targeted re-run).
    """
    result = QuotaAlertResult(run_id=run_id, today=as_of.astimezone(UTC).date())

    def to_claims() -> Iterator[claims.Claim[QuotaAlert]]:
        for alert in find_alerts(read_conn, as_of, thresholds, tenant_ids=tenant_ids):
            result.candidates += 1
            yield claims.Claim(alert.dedup_key, alert.tenant_id, alert.payload(run_id), alert)

    def deliver(claim: claims.Claim[QuotaAlert]) -> None:
        if claim.item.billing_email:
            send(claim.item)

    outcome = claims.claim_and_send(write_conn, EVENT_TYPE, to_claims(), deliver, batch_size=batch_size)
    result.sent = len(outcome.sent)
    result.already_recorded = outcome.already_recorded
    result.failed = outcome.failed
    result.failures = outcome.failures
    return result


def alerts_of_run(conn: psycopg.Connection, run_id: str, since: datetime) -> list[dict]:
    """The alerts a run recorded: one payload dict per alert, with tenant_id."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(db.sql("events_of_run"), {"type": EVENT_TYPE, "run_id": run_id, "since": since})
        return [{"tenant_id": r["tenant_id"], **r["payload"]} for r in cur.fetchall()]
