"""Quota alerts: usage against each tenant's effective quota, alerted once per threshold and period.

The due alerts come from one set-based query (``quota_alert_candidates.sql``). ``send_alerts``
walks the tenants a page of ids at a time; for each page, one short transaction claims the page's
due alerts with a single ``INSERT ... SELECT ... ON CONFLICT RETURNING`` into ``bisman_ops_claims``
(what comes back, with each alert's payload, is this run's to send) and commits; the mails go out
with no transaction open; one short transaction then records the delivered ones as ``quota.alert``
events and gives back the failed ones (``claims``). So an alert is recorded exactly when its mail
went out, a concurrent run skips what we claimed, and a failed mail is retried by the next run
without stopping the other tenants. Each run evaluates today and this month, and also every day or
month that ended since the previous run (``evaluations``): usage that crossed a quota between a
period's last run and its end is alerted once the period is over.
"""

from __future__ import annotations

import calendar
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.rows import tuple_row

from bisman_ops.recurring import claims, db

log = logging.getLogger(__name__)

EVENT_TYPE = "quota.alert"
SUMMARY_EVENT_TYPE = "quota.alert_summary"
DEFAULT_THRESHOLDS = (80, 100)
DEFAULT_PAGE_TENANTS = 500
FETCH_SIZE = 2000
MAX_FAILURES_KEPT = 50
ALL_IDS = (-(2**63), 2**63 - 1)


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
    payload_json: str = ""  # the event's payload, JSON-encoded by the query

    @property
    def percent(self) -> float | None:
        """Usage as a percentage of the quota; None for a quota of 0 (any usage is over it)."""
        return round(100.0 * self.used / self.quota, 1) if self.quota else None

    @classmethod
    def from_event(cls, dedup_key: str, tenant_id: int, payload: dict) -> QuotaAlert:
        return cls(dedup_key, tenant_id, payload["slug"], payload["name"], payload["emailed_to"],
                   payload["metric"], payload["period"], date.fromisoformat(payload["period_start"]),
                   payload["quota"], payload["used"], payload["threshold"])


@dataclass
class QuotaAlertResult:
    run_id: str
    today: date
    candidates: int = 0
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def validate_thresholds(thresholds) -> tuple[int, ...]:
    values = tuple(sorted({int(t) for t in thresholds}))
    if not values or any(t <= 0 or t > 1000 for t in values):
        raise ValueError(f"quota thresholds {thresholds!r}: expected percentages in 1..1000")
    return values


MAX_ENDED_DAYS = 7  # a paused DAG catches up the last week's ended days, not a year of them


@dataclass(frozen=True)
class Evaluation:
    """One pass of the candidates query: day quotas of ``day`` and/or month quotas of the month
    starting ``month_start``, measured through ``month_through``."""

    day: date
    month_start: date
    month_through: date
    check_day: bool = True
    check_month: bool = True

    def params(self) -> dict:
        return {"day": self.day, "month_start": self.month_start, "month_through": self.month_through,
                "check_day": self.check_day, "check_month": self.check_month}


def _month_end(d: date) -> date:
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def evaluations(as_of: datetime, previous: datetime | None = None) -> list[Evaluation]:
    """What a run at ``as_of`` evaluates: today and this month, plus every period that ended since
    the previous run at ``previous`` (default: a day earlier), so usage that crossed a quota between
    the last run of a day (or month) and its end is alerted after it ended. Ended days are capped at
    ``MAX_ENDED_DAYS``."""
    today = as_of.astimezone(UTC).date()
    since = (previous or as_of - timedelta(days=1)).astimezone(UTC).date()
    since = max(since, today - timedelta(days=MAX_ENDED_DAYS))
    ended_days = [since + timedelta(days=i) for i in range((today - since).days)]
    ended_months = sorted({d.replace(day=1) for d in ended_days} - {today.replace(day=1)})
    out = []
    for d in ended_days:
        # An ended day that closes an ended month carries that month's evaluation too.
        closes_month = d.replace(day=1) in ended_months and d == min(_month_end(d), today - timedelta(days=1))
        out.append(Evaluation(d, d.replace(day=1), _month_end(d), check_day=True, check_month=closes_month))
    out.append(Evaluation(today, today.replace(day=1), today))
    return out


def _params(evaluation: Evaluation, thresholds, tenant_ids, run_id: str, from_id: int, to_id: int) -> dict:
    return {**evaluation.params(), "thresholds": list(validate_thresholds(thresholds)),
            "tenant_ids": tenant_ids, "run_id": run_id, "from_id": from_id, "to_id": to_id}


def find_alerts(conn: psycopg.Connection, as_of: datetime, thresholds=DEFAULT_THRESHOLDS, *,
                tenant_ids: list[int] | None = None) -> Iterator[QuotaAlert]:
    """The alerts due at ``as_of`` and not yet recorded, in ``dedup_key`` order, streamed; records
    nothing (a dry run: what the next run would send)."""
    params = _params(Evaluation(today := as_of.astimezone(UTC).date(), today.replace(day=1), today),
                     thresholds, tenant_ids, "", *ALL_IDS)
    with conn.transaction(), conn.cursor(name=f"quota_alerts_{uuid.uuid4().hex[:12]}",
                                         row_factory=tuple_row) as cur:
        conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")  # all rows are wanted, not the first
        cur.itersize = FETCH_SIZE
        cur.execute(db.sql("quota_alert_candidates"), params)
        for row in cur:
            yield QuotaAlert(*row)


_CLAIM_HEAD = """WITH candidates AS MATERIALIZED (
"""
_CLAIM_TAIL = """
),
claimed AS (
    INSERT INTO bisman_ops_claims AS cl (dedup_key, type, tenant_id, claimed_by, claimed_at, expires_at)
    SELECT c.dedup_key, 'quota.alert', c.tenant_id, %(claimed_by)s, now(),
           now() + make_interval(secs => %(lease_s)s)
    FROM candidates c
    ORDER BY c.dedup_key
    ON CONFLICT (dedup_key) DO UPDATE
        SET tenant_id = EXCLUDED.tenant_id, claimed_by = EXCLUDED.claimed_by,
            claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at
        WHERE cl.expires_at < now()
    RETURNING dedup_key
)
-- Not a join: estimated at one row each side, it ran as a nested loop over both (half the page's time).
SELECT c.dedup_key, c.tenant_id, c.payload_json
FROM candidates c
WHERE c.dedup_key = ANY (ARRAY(SELECT dedup_key FROM claimed))
ORDER BY c.dedup_key"""


def _claim_sql() -> str:
    # The candidates query, claimed as it stands: the bare-SQL shape, one statement per page.
    return _CLAIM_HEAD + db.sql("quota_alert_candidates") + _CLAIM_TAIL


def send_alerts(conn: psycopg.Connection, as_of: datetime, send: Callable[[QuotaAlert], None], *,
                run_id: str, thresholds=DEFAULT_THRESHOLDS, page_tenants: int = DEFAULT_PAGE_TENANTS,
                tenant_ids: list[int] | None = None, previous: datetime | None = None) -> QuotaAlertResult:
    """Record and deliver every alert due at ``as_of``, and those of the periods that ended since
    ``previous`` (see ``evaluations`` and the module doc).

    A tenant without a billing email is recorded without a mail (the team summary still shows
    it). ``send`` failures are counted in the result, not raised: the caller decides. Database
    errors are raised. ``tenant_ids`` limits the run to those tenants (tests, a targeted re-run).
    """
    result = QuotaAlertResult(run_id=run_id, today=as_of.astimezone(UTC).date())
    claim = _claim_sql()
    claimer = claims.new_claimer()
    claims.prune(conn)
    for evaluation in evaluations(as_of, previous):
        after_id = ALL_IDS[0]
        while True:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(db.sql("tenant_page"), {"after_id": after_id, "page_size": page_tenants})
                page = cur.fetchone()
            if not page["tenants"]:
                break
            params = _params(evaluation, thresholds, tenant_ids, run_id, after_id + 1, page["to_id"])
            _claim_page(conn, claim, params, send, result, claimer)
            after_id = page["to_id"]
    return result


def _claim_page(conn: psycopg.Connection, claim: str, params: dict, send, result: QuotaAlertResult,
                claimer: str) -> None:
    claimed = claims.claim(conn, claim, params, claimer)  # committed: no transaction while mailing
    result.candidates += len(claimed)
    delivered, failed = [], []
    for row in claimed.values():
        alert = QuotaAlert.from_event(row["dedup_key"], row["tenant_id"], json.loads(row["payload_json"]))
        if alert.billing_email:
            try:
                send(alert)
            except Exception as exc:  # one tenant's failure must not stop the others
                failed.append(alert.dedup_key)
                if len(result.failures) < MAX_FAILURES_KEPT:
                    result.failures.append(f"{alert.dedup_key}: {exc}")
                log.warning("not sent, left unrecorded for the next run: %s: %s", alert.dedup_key, exc)
                continue
        # The payload as the query encoded it: written to events as it is.
        delivered.append(claims.Claim(alert.dedup_key, alert.tenant_id, row["payload_json"], None))
    claims.settle(conn, EVENT_TYPE, claimer, delivered, failed)
    result.sent += len(delivered)
    result.failed += len(failed)


def alerts_of_run(conn: psycopg.Connection, run_id: str, since: datetime) -> list[dict]:
    """The alerts a run recorded: one payload dict per alert, with tenant_id."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(db.sql("events_of_run"), {"type": EVENT_TYPE, "run_id": run_id, "since": since})
        return [{"tenant_id": r["tenant_id"], **r["payload"]} for r in cur.fetchall()]
