"""Daily aggregation against the sandbox PostgreSQL (through PgBouncer), on hand-built usage."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from bisman_ops.recurring import db, usage_aggregation

from .conftest import rows


def usage_rows(dsn, ids):
    return rows(dsn, "SELECT tenant_id, metric, period, period_start, quantity, computed_at "
                     "FROM tenant_usage WHERE tenant_id = ANY(%s) ORDER BY 1, 2, 3, 4", (ids,))


def quantities(dsn, ids):
    return {(r[0], r[1], r[2], r[3]): r[4] for r in usage_rows(dsn, ids)}


@pytest.mark.parametrize(("start", "end", "day"), [
    (datetime(2026, 3, 9, 2, tzinfo=UTC), datetime(2026, 3, 10, 2, tzinfo=UTC), date(2026, 3, 9)),
    (datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC), date(2026, 3, 9)),
    (datetime(2025, 12, 31, 2, tzinfo=UTC), datetime(2026, 1, 1, 2, tzinfo=UTC), date(2025, 12, 31)),
    (datetime(2024, 2, 29, 2, tzinfo=UTC), datetime(2024, 3, 1, 2, tzinfo=UTC), date(2024, 2, 29)),
])
def test_the_day_aggregated_is_the_utc_day_before_the_interval_end(start, end, day):
    assert usage_aggregation.day_for_interval(start, end) == day


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"lookback_days": -1}, "lookback_days=-1"),
    ({"late_commit_margin": timedelta(minutes=-5)}, "late_commit_margin="),
    ({"late_commit_margin": 3600}, "late_commit_margin=3600"),
])
def test_a_negative_lookback_or_margin_is_refused_naming_it(conn, kwargs, named):
    with pytest.raises(ValueError, match=named):
        usage_aggregation.aggregate_day(conn, date(2024, 3, 9), **kwargs)


def test_day_rows_and_month_to_date_rows_on_29_february(conn, tenants, primary_dsn):
    a, b = tenants.add(), tenants.add()
    for d in range(1, 30):
        tenants.usage(a, date(2024, 2, d), "api_calls", 10 * d)
    tenants.usage(b, date(2024, 2, 29), "storage_mb", 7)
    tenants.usage(a, date(2024, 3, 1), "api_calls", 99_999)  # the next month: not in February's rows

    # lookback 0: this day alone (the 1st to 28th were never aggregated and would be caught up).
    result = usage_aggregation.aggregate_day(conn, date(2024, 2, 29), lookback_days=0)

    got = quantities(primary_dsn, [a, b])
    assert got == {
        (a, "api_calls", "day", date(2024, 2, 29)): 290,
        (a, "api_calls", "month", date(2024, 2, 1)): sum(10 * d for d in range(1, 30)),
        (b, "storage_mb", "day", date(2024, 2, 29)): 7,
        (b, "storage_mb", "month", date(2024, 2, 1)): 7,
    }
    assert result.through_day == date(2024, 2, 29)


def test_rerunning_a_day_rewrites_nothing(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 4, 3), "api_calls", 5)
    usage_aggregation.aggregate_day(conn, date(2024, 4, 3))
    before = usage_rows(primary_dsn, [a])

    again = usage_aggregation.aggregate_day(conn, date(2024, 4, 3))

    assert usage_rows(primary_dsn, [a]) == before  # computed_at included
    assert again.day_rows_changed == 0 and again.month_rows_changed == 0


def test_backfill_in_any_order_gives_the_result_of_running_in_order(conn, tenants, primary_dsn):
    ids = [tenants.add() for _ in range(3)]
    days = [date(2024, 5, d) for d in range(1, 11)]
    rng = random.Random(7)
    for tid in ids:
        for d in days:
            tenants.usage(tid, d, "api_calls", rng.randint(0, 1000))
            tenants.usage(tid, d, "invoices_created", rng.randint(0, 5))

    for d in days:
        usage_aggregation.aggregate_day(conn, d)
    in_order = quantities(primary_dsn, ids)
    tenants._exec("DELETE FROM tenant_usage WHERE tenant_id = ANY(%s)", (ids,))
    for d in rng.sample(days, len(days)):
        usage_aggregation.aggregate_day(conn, d)

    assert quantities(primary_dsn, ids) == in_order
    assert in_order[(ids[0], "api_calls", "month", date(2024, 5, 1))] == sum(
        r[0] for r in rows(primary_dsn, "SELECT quantity FROM client_daily_usage WHERE tenant_id = %s "
                                        "AND metric = 'api_calls' AND usage_date <= '2024-05-10'", (ids[0],)))


def test_late_usage_is_picked_up_by_rerunning_its_day_and_the_month_row_stays_consistent(
        conn, tenants, primary_dsn):
    a = tenants.add()
    for d in (1, 2, 3):
        tenants.usage(a, date(2024, 6, d), "api_calls", 100)
        usage_aggregation.aggregate_day(conn, date(2024, 6, d))
    tenants.usage(a, date(2024, 6, 1), "api_calls", 150)  # late: day 1 grew after it was aggregated

    usage_aggregation.aggregate_day(conn, date(2024, 6, 1))

    got = quantities(primary_dsn, [a])
    assert got[(a, "api_calls", "day", date(2024, 6, 1))] == 150
    # Through day 3 (the latest aggregated), not rolled back to day 1.
    assert got[(a, "api_calls", "month", date(2024, 6, 1))] == 350


def test_month_rows_do_not_cross_a_year_boundary(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 12, 31), "api_calls", 40)
    tenants.usage(a, date(2025, 1, 1), "api_calls", 2)
    usage_aggregation.aggregate_day(conn, date(2024, 12, 31))
    usage_aggregation.aggregate_day(conn, date(2025, 1, 1))

    got = quantities(primary_dsn, [a])
    assert got[(a, "api_calls", "month", date(2024, 12, 1))] == 40
    assert got[(a, "api_calls", "month", date(2025, 1, 1))] == 2


def test_a_usage_row_deleted_upstream_disappears_from_the_day_and_month_rows(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 7, 2), "storage_mb", 30)
    usage_aggregation.aggregate_day(conn, date(2024, 7, 2))
    tenants._exec("DELETE FROM client_daily_usage WHERE tenant_id = %s", (a,))

    result = usage_aggregation.aggregate_day(conn, date(2024, 7, 2))

    assert quantities(primary_dsn, [a]) == {}
    assert result.day_rows_deleted == 1 and result.month_rows_deleted == 1


def test_connection_dropped_mid_run_leaves_no_partial_writes_and_the_next_run_recovers(
        app_uri, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 8, 5), "api_calls", 11)
    tenants.usage(a, date(2024, 8, 6), "api_calls", 12)
    with db.connect(app_uri) as c:
        usage_aggregation.aggregate_day(c, date(2024, 8, 5))
    tenants.usage(a, date(2024, 8, 5), "api_calls", 21)  # late usage: the re-run has something to write

    # Hold the tenant's month row so the run stops after writing its day rows, inside its transaction.
    blocker = psycopg.connect(primary_dsn, connect_timeout=10)
    blocker.execute("SELECT 1 FROM tenant_usage WHERE tenant_id = %s AND period = 'month' FOR UPDATE", (a,))
    errors: list[BaseException] = []

    def run():
        try:
            with db.connect(app_uri, application_name="aggregation-under-test") as c:
                usage_aggregation.aggregate_day(c, date(2024, 8, 6))
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        victim = _wait_for_blocked_backend(primary_dsn, "tenant_usage")
        rows(primary_dsn, "SELECT pg_terminate_backend(%s)", (victim,))
        worker.join(30)
    finally:
        blocker.rollback()
        blocker.close()

    assert errors and isinstance(errors[0], psycopg.OperationalError)
    got = quantities(primary_dsn, [a])
    assert (a, "api_calls", "day", date(2024, 8, 6)) not in got  # the run's day rows were rolled back
    assert got[(a, "api_calls", "month", date(2024, 8, 1))] == 11

    with db.connect(app_uri) as c:
        usage_aggregation.aggregate_day(c, date(2024, 8, 6))
    got = quantities(primary_dsn, [a])
    assert got[(a, "api_calls", "day", date(2024, 8, 6))] == 12
    assert got[(a, "api_calls", "month", date(2024, 8, 1))] == 33


def _wait_for_blocked_backend(dsn: str, table: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = rows(dsn, "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                          "AND state = 'active' AND query ILIKE %s AND pid <> pg_backend_pid()",
                     (f"%{table}%",))
        if found:
            return found[0][0]
        time.sleep(0.05)
    raise AssertionError(f"no backend blocked on {table} within {timeout} s")


def test_two_aggregations_of_one_month_at_once_keep_the_later_through_day(app_uri, tenants, primary_dsn):
    a = tenants.add()
    for d in range(1, 6):
        tenants.usage(a, date(2024, 9, d), "api_calls", d)
    errors = []

    def run(day):
        try:
            with db.connect(app_uri) as c:
                usage_aggregation.aggregate_day(c, day)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(date(2024, 9, d),)) for d in (5, 2, 4, 1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert not errors
    assert quantities(primary_dsn, [a])[(a, "api_calls", "month", date(2024, 9, 1))] == 15


def test_a_day_years_back_is_aggregated_too(conn, tenants, primary_dsn):
    old = date(2019, 5, 17)  # a fixed date: no limit on how far back a backfill may go
    a = tenants.add()
    tenants.usage(a, old, "active_users", 3)
    usage_aggregation.aggregate_day(conn, old)
    assert quantities(primary_dsn, [a])[(a, "active_users", "day", old)] == 3


def test_late_usage_of_an_earlier_day_is_aggregated_by_the_next_run_with_its_month(conn, tenants,
                                                                                     primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 10, 7), "api_calls", 100)
    usage_aggregation.aggregate_day(conn, date(2024, 10, 7))
    tenants.usage(a, date(2024, 10, 7), "api_calls", 150)  # arrives after the 7th was aggregated
    tenants.usage(a, date(2024, 10, 8), "api_calls", 10)

    result = usage_aggregation.aggregate_day(conn, date(2024, 10, 8))

    assert date(2024, 10, 7) in result.late_days
    got = quantities(primary_dsn, [a])
    assert got[(a, "api_calls", "day", date(2024, 10, 7))] == 150
    assert got[(a, "api_calls", "month", date(2024, 10, 1))] == 160


def test_late_usage_of_a_finished_month_recomputes_that_months_rows(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 11, 29), "storage_mb", 40)
    tenants.usage(a, date(2024, 11, 30), "storage_mb", 2)
    usage_aggregation.aggregate_day(conn, date(2024, 11, 30))  # November's month rows through the 30th
    tenants.usage(a, date(2024, 11, 29), "storage_mb", 45)  # late, after the month was done

    result = usage_aggregation.aggregate_day(conn, date(2024, 12, 2))

    assert date(2024, 11, 1) in result.months
    got = quantities(primary_dsn, [a])
    assert got[(a, "storage_mb", "day", date(2024, 11, 29))] == 45
    assert got[(a, "storage_mb", "month", date(2024, 11, 1))] == 47


def test_re_running_after_catching_up_late_usage_changes_nothing(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 10, 14), "api_calls", 5)
    usage_aggregation.aggregate_day(conn, date(2024, 10, 14))
    tenants.usage(a, date(2024, 10, 14), "api_calls", 6)
    usage_aggregation.aggregate_day(conn, date(2024, 10, 15))
    before = usage_rows(primary_dsn, [a])

    # Within the late-commit margin the 14th is read again, and that rewrites nothing ...
    again = usage_aggregation.aggregate_day(conn, date(2024, 10, 15))
    assert usage_rows(primary_dsn, [a]) == before  # computed_at included: nothing rewritten
    assert again.day_rows_changed == 0 and again.month_rows_changed == 0
    # ... and once the margin has passed (0 here, rather than waiting) it is not read at all.
    settled = usage_aggregation.aggregate_day(conn, date(2024, 10, 15), late_commit_margin=timedelta(0))
    assert date(2024, 10, 14) not in settled.late_days
    assert usage_rows(primary_dsn, [a]) == before


def test_usage_changed_before_the_lookback_is_left_to_an_explicit_backfill(conn, tenants, primary_dsn):
    a = tenants.add()
    tenants.usage(a, date(2024, 1, 10), "api_calls", 1)
    usage_aggregation.aggregate_day(conn, date(2024, 1, 10))
    tenants.usage(a, date(2024, 1, 10), "api_calls", 2)

    result = usage_aggregation.aggregate_day(conn, date(2024, 2, 20), lookback_days=35)  # from Jan 16

    assert date(2024, 1, 10) not in result.late_days
    assert quantities(primary_dsn, [a])[(a, "api_calls", "day", date(2024, 1, 10))] == 1


def test_late_usage_written_without_setting_updated_at_is_picked_up(conn, tenants, primary_dsn):
    """issue 23 point 11: updated_at comes from the database (a trigger), not from the writer."""
    a = tenants.add()
    tenants.usage(a, date(2023, 3, 10), "api_calls", 100)
    tenants.usage(a, date(2023, 3, 10), "storage_mb", 5)
    usage_aggregation.aggregate_day(conn, date(2023, 3, 10))
    # One writer leaves updated_at alone, another sets a stale one of its own.
    tenants._exec("UPDATE client_daily_usage SET quantity = 150 "
                  "WHERE tenant_id = %s AND metric = 'api_calls'", (a,))
    tenants._exec("UPDATE client_daily_usage SET quantity = 9, updated_at = '2023-03-10' "
                  "WHERE tenant_id = %s AND metric = 'storage_mb'", (a,))

    result = usage_aggregation.aggregate_day(conn, date(2023, 3, 11))

    assert date(2023, 3, 10) in result.late_days
    got = quantities(primary_dsn, [a])
    assert got[(a, "api_calls", "day", date(2023, 3, 10))] == 150
    assert got[(a, "storage_mb", "day", date(2023, 3, 10))] == 9
    assert got[(a, "api_calls", "month", date(2023, 3, 1))] == 150


def test_usage_committed_after_a_run_with_an_updated_at_before_it_is_picked_up_by_the_next(
        conn, tenants, primary_dsn):
    """A transaction stamps its row, then commits after a run that saw a later-stamped row of the
    same day: the next run still finds it (the watermark allows for late commits)."""
    a, b = tenants.add(), tenants.add()
    tenants.usage(a, date(2023, 4, 10), "api_calls", 100)
    tenants.usage(b, date(2023, 4, 10), "api_calls", 100)
    usage_aggregation.aggregate_day(conn, date(2023, 4, 10))
    late = psycopg.connect(primary_dsn, connect_timeout=10)
    try:
        # Stamped now, as the application stamps it, but not committed yet.
        late.execute("UPDATE client_daily_usage SET quantity = 150, updated_at = now() "
                     "WHERE tenant_id = %s AND usage_date = '2023-04-10'", (a,))
        tenants.usage(b, date(2023, 4, 10), "api_calls", 120)  # committed, stamped after a's row
        first = usage_aggregation.aggregate_day(conn, date(2023, 4, 11))
        late.commit()
    finally:
        late.close()
    assert date(2023, 4, 10) in first.late_days
    assert quantities(primary_dsn, [a])[(a, "api_calls", "day", date(2023, 4, 10))] == 100  # not seen yet

    usage_aggregation.aggregate_day(conn, date(2023, 4, 12))

    got = quantities(primary_dsn, [a, b])
    assert got[(a, "api_calls", "day", date(2023, 4, 10))] == 150
    assert got[(b, "api_calls", "day", date(2023, 4, 10))] == 120
    assert got[(a, "api_calls", "month", date(2023, 4, 1))] == 150
