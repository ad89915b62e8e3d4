"""Daily usage aggregation: ``client_daily_usage`` of one UTC day into ``tenant_usage``.

For the day: a ``day`` row per tenant and metric with usage that day. For its month: the
month-to-date row through the latest aggregated day of the month (this day, or a later one
already aggregated), summed from ``client_daily_usage`` so late usage of any earlier day is
included. Everything in one transaction, set-based; rows whose quantity is unchanged are not
rewritten, so a re-run changes nothing, and days can be (back)filled in any order.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from bisman_ops.recurring import db


@dataclass(frozen=True)
class AggregationResult:
    day: date
    month_start: date
    through_day: date
    day_rows_changed: int
    day_rows_deleted: int
    month_rows: int
    month_rows_changed: int
    month_rows_deleted: int


def day_for_interval(data_interval_start: datetime, data_interval_end: datetime) -> date:
    """The UTC day a run aggregates: the day before its data interval ends.

    The 02:00 run on D has the interval [D-1 02:00, D 02:00) and aggregates D-1; with a midnight
    schedule the interval [D-1 00:00, D 00:00) also gives D-1.
    """
    if data_interval_end <= data_interval_start:
        raise ValueError(f"empty data interval {data_interval_start} .. {data_interval_end}")
    if data_interval_end.tzinfo is None:
        raise ValueError(f"data interval end {data_interval_end!r} has no time zone")
    end_utc = data_interval_end.astimezone(UTC)
    return end_utc.date() - timedelta(days=1)


def aggregate_day(conn: psycopg.Connection, day: date) -> AggregationResult:
    """Aggregate ``day`` into ``tenant_usage`` in one transaction (rolled back on any error)."""
    month_start = day.replace(day=1)
    month_end = day.replace(day=calendar.monthrange(day.year, day.month)[1])
    params = {"day": day, "month_start": month_start, "month_end": month_end}
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(db.sql("aggregation_lock"), params)
        cur.execute(db.sql("aggregate_day_rows"), params)
        day_changed = cur.rowcount
        cur.execute(db.sql("delete_stale_day_rows"), params)
        day_deleted = cur.rowcount
        cur.execute(db.sql("month_through_day"), params)
        through_day = cur.fetchone()["through_day"]
        cur.execute(db.sql("aggregate_month_rows"), {**params, "through_day": through_day})
        month = cur.fetchone()
    return AggregationResult(
        day=day,
        month_start=month_start,
        through_day=through_day,
        day_rows_changed=day_changed,
        day_rows_deleted=day_deleted,
        month_rows=month["month_rows"],
        month_rows_changed=month["month_rows_changed"],
        month_rows_deleted=month["month_rows_deleted"],
    )

