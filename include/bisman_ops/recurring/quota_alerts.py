"""Quota alerts: usage against each tenant's effective quota, alerted once per threshold and period.

The due alerts come from one set-based query (``quota_alert_candidates.sql``). ``send_alerts``
walks the tenants a page of ids at a time; for each page, one transaction claims the page's due
alerts with a single ``INSERT ... SELECT ... ON CONFLICT (dedup_key) DO NOTHING RETURNING`` (what
comes back is this run's to send), mails each, deletes the claims whose mail failed, and commits.
So an alert is recorded exactly when its mail went out; a concurrent run inserting the same key
waits for ours and then skips it (or claims it, if we gave it back); a failed mail is retried by
the next run and does not stop the other tenants. If the connection drops after some mails of a
page went out, the page is rolled back and those mails go again next run (at least once, never
lost); the page size bounds that.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import psycopg
from psycopg.rows import tuple_row

from bisman_ops.recurring import db

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


def _params(as_of: datetime, thresholds, tenant_ids, run_id: str, from_id: int, to_id: int) -> dict:
    today = as_of.astimezone(UTC).date()
    return {"today": today, "month_start": today.replace(day=1),
            "thresholds": list(validate_thresholds(thresholds)), "tenant_ids": tenant_ids,
            "run_id": run_id, "from_id": from_id, "to_id": to_id}


def find_alerts(conn: psycopg.Connection, as_of: datetime, thresholds=DEFAULT_THRESHOLDS, *,
                tenant_ids: list[int] | None = None) -> Iterator[QuotaAlert]:
    """The alerts due at ``as_of`` and not yet recorded, in ``dedup_key`` order, streamed; records
    nothing (a dry run: what the next run would send)."""
    params = _params(as_of, thresholds, tenant_ids, "", *ALL_IDS)
    with conn.transaction(), conn.cursor(name=f"quota_alerts_{uuid.uuid4().hex[:12]}",
                                         row_factory=tuple_row) as cur:
        conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")  # all rows are wanted, not the first
        cur.itersize = FETCH_SIZE
        cur.execute(db.sql("quota_alert_candidates"), params)
        for row in cur:
            yield QuotaAlert(*row)


def _claim_sql() -> str:
    # The candidates query, inserted as it stands: the bare-SQL shape, one statement per page.
    return ("INSERT INTO events (tenant_id, type, payload, occurred_at, dedup_key) "
            "SELECT c.tenant_id, 'quota.alert', c.payload_json::jsonb, now(), c.dedup_key "
            "FROM (\n" + db.sql("quota_alert_candidates") + "\n) c ORDER BY c.dedup_key "
            "ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key, tenant_id, payload")


def send_alerts(conn: psycopg.Connection, as_of: datetime, send: Callable[[QuotaAlert], None], *,
                run_id: str, thresholds=DEFAULT_THRESHOLDS, page_tenants: int = DEFAULT_PAGE_TENANTS,
                tenant_ids: list[int] | None = None) -> QuotaAlertResult:
    """Record and deliver every alert due at ``as_of`` (see the module doc).

    A tenant without a billing email is recorded without a mail (the team summary still shows
    it). ``send`` failures are counted in the result, not raised: the caller decides. Database
    errors are raised (the current page is rolled back). ``tenant_ids`` limits the run to those
    tenants (tests, a targeted re-run).
    """
    result = QuotaAlertResult(run_id=run_id, today=as_of.astimezone(UTC).date())
    claim = _claim_sql()
    after_id = ALL_IDS[0]
    while True:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(db.sql("tenant_page"), {"after_id": after_id, "page_size": page_tenants})
            page = cur.fetchone()
        if not page["tenants"]:
            return result
        _claim_page(conn, claim, _params(as_of, thresholds, tenant_ids, run_id, after_id + 1, page["to_id"]),
                    send, result)
        after_id = page["to_id"]


def _claim_page(conn: psycopg.Connection, claim: str, params: dict, send, result: QuotaAlertResult) -> None:
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(claim, params)
        claimed = cur.fetchall()
        result.candidates += len(claimed)
        failed = []
        for row in claimed:
            alert = QuotaAlert.from_event(row["dedup_key"], row["tenant_id"], row["payload"])
            if not alert.billing_email:
                result.sent += 1
                continue
            try:
                send(alert)
            except Exception as exc:  # one tenant's failure must not stop the others
                failed.append(alert.dedup_key)
                if len(result.failures) < MAX_FAILURES_KEPT:
                    result.failures.append(f"{alert.dedup_key}: {exc}")
                log.warning("not sent, left unrecorded for the next run: %s: %s", alert.dedup_key, exc)
            else:
                result.sent += 1
        if failed:
            cur.execute(db.sql("release_events"), {"type": EVENT_TYPE, "dedup_keys": failed})
        result.failed += len(failed)


def alerts_of_run(conn: psycopg.Connection, run_id: str, since: datetime) -> list[dict]:
    """The alerts a run recorded: one payload dict per alert, with tenant_id."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(db.sql("events_of_run"), {"type": EVENT_TYPE, "run_id": run_id, "since": since})
        return [{"tenant_id": r["tenant_id"], **r["payload"]} for r in cur.fetchall()]
