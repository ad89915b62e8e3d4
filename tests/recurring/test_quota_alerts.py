"""Quota alerts against the sandbox PostgreSQL and the mail/Slack sinks, on hand-built usage."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, date, datetime

import psycopg
import pytest

from bisman_ops import messaging
from bisman_ops.recurring import db, notices, quota_alerts, tasks, usage_aggregation
from bisman_sandbox import sinks

from .conftest import rows

AS_OF = datetime(2025, 6, 15, 12, 30, tzinfo=UTC)  # today 2025-06-15, month from 2025-06-01
TODAY = AS_OF.date()


def run(conn, ids, send=None, as_of=AS_OF, run_id="test", **kw):
    sent = []

    def record(alert):
        if send:
            send(alert)
        sent.append(alert)

    result = quota_alerts.send_alerts(conn, as_of, record, run_id=run_id, tenant_ids=ids, **kw)
    return result, sent


def recorded(dsn, ids):
    return sorted(r[0] for r in rows(dsn, "SELECT dedup_key FROM events WHERE type = 'quota.alert' "
                                          "AND tenant_id = ANY(%s)", (ids,)))


def test_exactly_80_percent_alerts_at_80_and_just_below_does_not(conn, tenants, primary_dsn):
    at, below = tenants.add(plan="free"), tenants.add(plan="free")  # free: api_calls 1000 a day
    tenants.usage(at, TODAY, "api_calls", 800)
    tenants.usage(below, TODAY, "api_calls", 799)

    result, sent = run(conn, [at, below])

    assert [(a.tenant_id, a.threshold, a.period) for a in sent] == [(at, 80, "day")]
    assert recorded(primary_dsn, [at, below]) == [f"quota.alert:{at}:api_calls:day:{TODAY}:80"]
    assert result.sent == 1


def test_exactly_100_percent_alerts_at_100_only(conn, tenants):
    t = tenants.add(plan="free")
    tenants.usage(t, TODAY, "api_calls", 1000)
    _, sent = run(conn, [t])
    assert [a.threshold for a in sent] == [100]


def test_usage_jumping_past_100_percent_sends_the_100_alert_not_a_stale_80(conn, tenants, primary_dsn):
    t = tenants.add(plan="free")
    tenants.usage(t, TODAY, "api_calls", 5000)

    _, sent = run(conn, [t])
    _, again = run(conn, [t])

    assert [a.threshold for a in sent] == [100]
    assert again == []
    assert recorded(primary_dsn, [t]) == [f"quota.alert:{t}:api_calls:day:{TODAY}:100"]


def test_crossing_80_then_100_alerts_each_once(conn, tenants, primary_dsn):
    t = tenants.add(plan="free")
    tenants.usage(t, TODAY, "api_calls", 850)
    _, first = run(conn, [t])
    tenants.usage(t, TODAY, "api_calls", 1200)
    _, second = run(conn, [t])
    _, third = run(conn, [t])
    assert [a.threshold for a in first] == [80]
    assert [a.threshold for a in second] == [100]
    assert third == []


def test_null_quota_is_unlimited_and_an_override_beats_the_plan(conn, tenants):
    enterprise = tenants.add(plan="enterprise")  # plan: api_calls unlimited (NULL)
    unlimited_override = tenants.add(plan="free")
    tenants.quota(unlimited_override, "api_calls", "day", None)
    lower_override = tenants.add(plan="enterprise")
    tenants.quota(lower_override, "api_calls", "day", 100)
    raised_override = tenants.add(plan="free")
    tenants.quota(raised_override, "api_calls", "day", 10_000)
    for t in (enterprise, unlimited_override, lower_override, raised_override):
        tenants.usage(t, TODAY, "api_calls", 1500)

    _, sent = run(conn, [enterprise, unlimited_override, lower_override, raised_override])

    assert [(a.tenant_id, a.quota, a.threshold) for a in sent] == [(lower_override, 100, 100)]


def test_month_usage_counts_aggregated_rows_and_days_not_yet_aggregated(conn, tenants):
    t = tenants.add(plan="free")  # invoices_created: 50 a month
    month = date(2025, 7, 1)
    for d in (1, 2, 3):
        tenants.usage(t, date(2025, 7, d), "invoices_created", 10)
    usage_aggregation.aggregate_day(conn, date(2025, 7, 2))  # month row through the 2nd: 20
    tenants.usage(t, date(2025, 7, 4), "invoices_created", 10)  # 3rd and 4th not aggregated: 40 = 80%

    _, sent = run(conn, [t], as_of=datetime(2025, 7, 4, 9, tzinfo=UTC))

    assert [(a.metric, a.period, a.period_start, a.used, a.threshold) for a in sent] == [
        ("invoices_created", "month", month, 40, 80)]


def test_a_new_month_starts_a_new_alert_period_across_the_year_boundary(conn, tenants):
    t = tenants.add(plan="free")  # storage_mb: 500 a month
    tenants.usage(t, date(2025, 12, 31), "storage_mb", 500)
    tenants.usage(t, date(2026, 1, 1), "storage_mb", 500)
    _, december = run(conn, [t], as_of=datetime(2025, 12, 31, 23, 30, tzinfo=UTC))
    _, january = run(conn, [t], as_of=datetime(2026, 1, 1, 0, 30, tzinfo=UTC))
    assert [a.period_start for a in december] == [date(2025, 12, 1)]
    assert [a.period_start for a in january] == [date(2026, 1, 1)]


def test_canceled_tenants_and_tenants_without_usage_get_no_alert(conn, tenants):
    canceled = tenants.add(plan="free", status="canceled")
    idle = tenants.add(plan="free")
    tenants.usage(canceled, TODAY, "api_calls", 5000)
    _, sent = run(conn, [canceled, idle])
    assert sent == []


def test_a_failed_send_is_not_recorded_does_not_block_others_and_is_retried(
        conn, tenants, primary_dsn):
    failing, fine = tenants.add(plan="free"), tenants.add(plan="free")
    for t in (failing, fine):
        tenants.usage(t, TODAY, "api_calls", 900)

    def send(alert):
        if alert.tenant_id == failing:
            raise OSError("mail server said no")

    result, _ = run(conn, [failing, fine], send=send)
    assert (result.sent, result.failed) == (1, 1)
    assert recorded(primary_dsn, [failing, fine]) == [f"quota.alert:{fine}:api_calls:day:{TODAY}:80"]

    retry, sent = run(conn, [failing, fine])
    assert [a.tenant_id for a in sent] == [failing] and retry.failed == 0
    assert len(recorded(primary_dsn, [failing, fine])) == 2


def test_two_runs_at_once_alert_once(app_uri, tenants, primary_dsn):
    ids = [tenants.add(plan="free") for _ in range(30)]
    for t in ids:
        tenants.usage(t, TODAY, "api_calls", 950)
    sent: list[str] = []
    lock = threading.Lock()
    errors = []

    def slow_send(alert):
        time.sleep(0.01)  # widen the window between claim and commit
        with lock:
            sent.append(alert.dedup_key)

    def one_run(run_id):
        try:
            with db.connect(app_uri) as c:
                quota_alerts.send_alerts(c, AS_OF, slow_send, run_id=run_id, tenant_ids=ids, page_tenants=7)
        except BaseException as exc:
            errors.append(exc)

    runs = [threading.Thread(target=one_run, args=(f"run-{i}",)) for i in range(2)]
    for t in runs:
        t.start()
    for t in runs:
        t.join(60)

    assert not errors
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 30
    assert len(recorded(primary_dsn, ids)) == 30


def test_with_smtp_down_nothing_is_recorded_and_the_next_run_delivers(conn, tenants, primary_dsn, ctx,
                                                                       mail_sink):
    t = tenants.add(plan="free")
    tenants.usage(t, TODAY, "api_calls", 1000)
    var = "AIRFLOW_CONN_SMTP_DEFAULT"
    working = os.environ[var]
    os.environ[var] = json.dumps({**json.loads(working), "port": 1})  # nothing listens there
    try:
        down, _ = run(conn, [t], send=notices.send_quota_alert)
    finally:
        os.environ[var] = working
    assert down.failed == 1 and "smtp_default" in down.failures[0]
    assert recorded(primary_dsn, [t]) == []

    up, _ = run(conn, [t], send=notices.send_quota_alert)

    assert up.sent == 1
    mail = sinks.wait_for_mail(ctx, lambda m: m["to"] == [f"billing+t{t}@tenants.bisman.test"], timeout=10)
    assert "100% of your daily api_calls quota reached" in mail["subject"]
    assert "1,000 of 1,000" in mail["text"]


def test_tenant_mail_and_team_summary_by_email_and_slack_go_out_once(conn, tenants, ctx, mail_sink):
    a, b = tenants.add(plan="free"), tenants.add(plan="free", billing_email=None)
    tenants.usage(a, TODAY, "api_calls", 800)
    tenants.usage(b, TODAY, "api_calls", 2000)
    since = datetime.now(UTC)
    result, _ = run(conn, [a, b], send=notices.send_quota_alert, run_id=f"summary-{a}")
    assert result.sent == 2  # b is recorded without a mail: it has no billing email

    first = tasks.send_quota_team_summary(f"summary-{a}", since)
    second = tasks.send_quota_team_summary(f"summary-{a}", since)

    assert first == {"alerts": 2, "email": True, "slack": True}
    assert second == {"alerts": 2, "email": False, "slack": False}
    # Other suites share the sinks: look only at what names this test's tenants.
    mails = [m for m in sinks.captured_mail(ctx) if f"t{a}" in m["text"] + str(m["to"])]
    tenant_mails = [m for m in mails if not m["subject"].startswith("[bisman-ops]")]
    assert [m["to"] for m in tenant_mails] == [[f"billing+t{a}@tenants.bisman.test"]]
    team = [m for m in mails if m["subject"].startswith("[bisman-ops] quota alerts")]
    assert len(team) == 1 and team[0]["to"] == messaging.team_recipients()
    assert f"test-t{b}" in team[0]["text"] and "no billing email" in team[0]["text"]
    posts = [p for p in sinks.captured_slack(ctx) if f"test-t{a}" in p["payload"].get("text", "")]
    assert len(posts) == 1


@pytest.mark.parametrize("bad", [[], [0], [80, 2000]])
def test_thresholds_outside_1_to_1000_percent_are_refused(bad):
    with pytest.raises(ValueError, match="thresholds"):
        quota_alerts.validate_thresholds(bad)


class SenderDied(BaseException):
    """What a worker killed mid-task looks like to the job: nothing after it runs."""


def test_a_sender_that_dies_mid_batch_records_nothing_and_its_claims_are_taken_over_after_the_lease(
        app_uri, tenants, primary_dsn):
    ids = [tenants.add(plan="free") for _ in range(4)]
    for t in ids:
        tenants.usage(t, TODAY, "api_calls", 900)
    sent: list[int] = []

    def send_then_die(alert):
        sent.append(alert.tenant_id)
        if len(sent) == 2:  # two mails out, then the worker is gone
            raise SenderDied()

    with db.connect(app_uri) as c, pytest.raises(SenderDied):
        quota_alerts.send_alerts(c, AS_OF, send_then_die, run_id="died", tenant_ids=ids)

    assert recorded(primary_dsn, ids) == []  # nothing recorded of what was not confirmed sent
    _, during_lease = run_fresh(app_uri, ids)
    assert during_lease == []  # a live claim is not sent twice by a run beside it
    tenants._exec("UPDATE bisman_ops_claims SET expires_at = now() - interval '1 second' "
                  "WHERE tenant_id = ANY(%s)", (ids,))  # the lease has passed
    _, resent = run_fresh(app_uri, ids)
    assert sorted(a.tenant_id for a in resent) == sorted(ids)  # at least once: the batch goes again
    assert len(recorded(primary_dsn, ids)) == 4


def test_mail_goes_out_with_no_database_transaction_open(app_uri, tenants, primary_dsn):
    ids = [tenants.add(plan="free") for _ in range(3)]
    for t in ids:
        tenants.usage(t, TODAY, "api_calls", 950)
    states = []

    with db.connect(app_uri) as c:
        def send(alert):
            states.append(c.info.transaction_status)

        result = quota_alerts.send_alerts(c, AS_OF, send, run_id="no-tx", tenant_ids=ids)

    assert result.sent == 3
    assert states == [psycopg.pq.TransactionStatus.IDLE] * 3
    assert len(recorded(primary_dsn, ids)) == 3


def test_a_day_quota_crossed_after_the_last_run_of_the_day_is_alerted_by_the_first_run_after_midnight(
        conn, tenants, primary_dsn):
    t = tenants.add(plan="free")  # api_calls: 1000 a day
    day = date(2025, 6, 20)
    tenants.usage(t, day, "api_calls", 500)
    last_of_day = datetime(2025, 6, 20, 23, 30, tzinfo=UTC)
    _, before = run(conn, [t], as_of=last_of_day)
    tenants.usage(t, day, "api_calls", 1100)  # crosses 100% at 23:50

    _, after = run(conn, [t], as_of=datetime(2025, 6, 21, 0, 30, tzinfo=UTC), previous=last_of_day)
    _, again = run(conn, [t], as_of=datetime(2025, 6, 21, 1, 30, tzinfo=UTC),
                   previous=datetime(2025, 6, 21, 0, 30, tzinfo=UTC))

    assert before == []
    assert [(a.period, a.period_start, a.threshold, a.used) for a in after] == [("day", day, 100, 1100)]
    assert again == []
    assert recorded(primary_dsn, [t]) == [f"quota.alert:{t}:api_calls:day:{day}:100"]


def test_a_month_quota_crossed_after_the_last_run_of_the_month_is_alerted_in_the_next_month(
        conn, tenants):
    t = tenants.add(plan="free")  # invoices_created: 50 a month, no day quota
    tenants.usage(t, date(2025, 8, 30), "invoices_created", 30)
    last_of_month = datetime(2025, 8, 31, 23, 30, tzinfo=UTC)
    _, before = run(conn, [t], as_of=last_of_month)
    tenants.usage(t, date(2025, 8, 31), "invoices_created", 25)  # 55 of 50 at 23:45

    _, after = run(conn, [t], as_of=datetime(2025, 9, 1, 0, 30, tzinfo=UTC), previous=last_of_month)

    assert before == []
    assert [(a.period, a.period_start, a.threshold, a.used) for a in after] == [
        ("month", date(2025, 8, 1), 100, 55)]


def test_the_periods_a_run_evaluates():
    e = quota_alerts.evaluations
    at = datetime(2025, 3, 1, 0, 30, tzinfo=UTC)
    # The first run of a month: February's last day and February itself, then today and March.
    assert [(v.day, v.check_day, v.month_start, v.month_through, v.check_month)
            for v in e(at, datetime(2025, 2, 28, 23, 30, tzinfo=UTC))] == [
        (date(2025, 2, 28), True, date(2025, 2, 1), date(2025, 2, 28), True),
        (date(2025, 3, 1), True, date(2025, 3, 1), date(2025, 3, 1), True)]
    # Within a day: today only.
    assert len(e(datetime(2025, 3, 1, 5, 30, tzinfo=UTC), datetime(2025, 3, 1, 4, 30, tzinfo=UTC))) == 1
    # After a long pause: the last week's ended days, no more.
    paused = e(datetime(2025, 3, 31, 0, 30, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    assert paused[0].day == date(2025, 3, 24) and len(paused) == 8


def run_fresh(uri, ids):
    with db.connect(uri) as c:
        return run(c, ids)
