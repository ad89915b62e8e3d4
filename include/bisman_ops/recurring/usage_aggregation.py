"""Daily usage aggregation: ``client_daily_usage`` of one UTC day into ``tenant_usage``.

For the day: a ``day`` row per tenant and metric with usage that day. For its month: the
month-to-date row through the latest aggregated day of the month (this day, or a later one
already aggregated), summed from ``client_daily_usage`` so late usage of any earlier day is
included. Late usage: every earlier day of the lookback (35 days) with usage rows updated after
that day's watermark is aggregated again in the same statements (those rows only), with the month
rows of its month, finished or not. ``updated_at`` is set by the database on every change (a
trigger, migration 0006), not by the writers; an index on ``(usage_date, updated_at)`` makes the
check one index descent per day. A day's watermark is when its last aggregation began
(``tenant_usage_days.aggregated_at``) less ``late_commit_margin``: a row that aggregation could
not see belonged to a transaction not committed yet, stamped at most the margin before its commit,
so a row committed late with an ``updated_at`` before the run is still found. The price: a day
written to within the margin before a run is read again by the next run, which changes nothing.
Everything in one transaction, set-based; rows whose quantity is unchanged are not rewritten, so
a re-run changes nothing, and days can be (back)filled in any order. A usage row *deleted* after
its day was aggregated is seen only when that day is aggregated again (an index sees no deletes).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from bisman_ops.recurring import db

DEFAULT_LOOKBACK_DAYS = 35
# Longest a usage writer is expected to take from a write to its commit. Longer than that, its rows
# are found only if the day changes again or is re-run. Below the 2 h between midnight and the daily
# run, so yesterday's last writes do not make every run read that day twice.
DEFAULT_LATE_COMMIT_MARGIN = timedelta(hours=1)


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
    late_days: tuple[date, ...] = ()  # earlier days re-read: usage updated after their watermark
    months: tuple[date, ...] = ()  # every month whose month rows were recomputed


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


def aggregate_day(conn: psycopg.Connection, day: date, *,
                  lookback_days: int = DEFAULT_LOOKBACK_DAYS,
                  late_commit_margin: timedelta = DEFAULT_LATE_COMMIT_MARGIN) -> AggregationResult:
    """Aggregate ``day``, and every earlier day within ``lookback_days`` whose usage changed since
    it was aggregated (late usage, allowing ``late_commit_margin`` for transactions committing
    late), with the month rows of those days' months, in one transaction (rolled back on any error)."""
    if lookback_days < 0:
        raise ValueError(f"lookback_days={lookback_days}: expected 0 or more")
    if not isinstance(late_commit_margin, timedelta) or late_commit_margin < timedelta(0):
        raise ValueError(f"late_commit_margin={late_commit_margin!r}: expected a timedelta of 0 or more")
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        # Which days: read before aggregating, so usage written meanwhile is newer than recorded.
        cur.execute(db.sql("changed_usage_days"),
                    {"day": day, "from_day": day - timedelta(days=lookback_days), "to_day": day,
                     "margin": late_commit_margin})
        found = cur.fetchall()
        days = [r["day"] for r in found]
        months = sorted({d.replace(day=1) for d in days})
        for month_start in months:  # ascending: two runs lock in the same order
            cur.execute(db.sql("aggregation_lock"), {"month_start": month_start})
        # The run's own day is read whole (a re-run or backfill recomputes it); a late day only
        # from the rows updated after its watermark.
        since = [None if r["day"] == day else r["since"] for r in found]
        cur.execute(db.sql("aggregate_day_rows"), {"days": days, "since": since})
        day_changed = cur.rowcount
        # A day never aggregated has no day rows to be stale.
        recorded = [r["day"] for r in found if r["recorded"]]
        day_deleted = 0
        if recorded:
            cur.execute(db.sql("delete_stale_day_rows"), {"days": recorded})
            day_deleted = cur.rowcount
        cur.execute(db.sql("record_usage_days"), {
            "days": days, "source_updated_at": [r["source_updated_at"] for r in found]})
        per_month = {}
        for month_start in months:
            latest = max(d for d in days if d.replace(day=1) == month_start)
            params = {"day": latest, "month_start": month_start,
                      "month_end": month_start.replace(
                          day=calendar.monthrange(month_start.year, month_start.month)[1])}
            cur.execute(db.sql("month_through_day"), params)
            through_day = cur.fetchone()["through_day"]
            cur.execute(db.sql("aggregate_month_rows"), {**params, "through_day": through_day})
            per_month[month_start] = (through_day, cur.fetchone())
    month_start = day.replace(day=1)
    through_day, month = per_month[month_start]
    return AggregationResult(
        day=day,
        month_start=month_start,
        through_day=through_day,
        day_rows_changed=day_changed,
        day_rows_deleted=day_deleted,
        month_rows=month["month_rows"],
        month_rows_changed=sum(m["month_rows_changed"] for _, m in per_month.values()),
        month_rows_deleted=sum(m["month_rows_deleted"] for _, m in per_month.values()),
        late_days=tuple(d for d in days if d != day),
        months=tuple(months),
    )
