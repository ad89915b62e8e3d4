"""Trial expiry against the sandbox PostgreSQL, the Stripe emulator and the mail sink."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from bisman_ops.recurring import db, notices, stripe_billing, trial_expiry
from bisman_ops.recurring.stripe_billing import StripeUnavailable
from bisman_sandbox import context, sinks, stripe_emulator

from .conftest import rows


@pytest.fixture(scope="module")
def stripe_client(ctx):
    stripe_emulator.seed(ctx)  # prices per plan (idempotent)
    return stripe_emulator.stripe_client(ctx)


@pytest.fixture(scope="module")
def prices(ctx, stripe_client):
    return stripe_emulator.seed(ctx)["prices"]


def subscribe(client, prices, tenant_id: int, plan: str, *, converted: bool,
              trial_end: datetime | None = None) -> str:
    """A Stripe customer and subscription: active on ``plan`` (card given), or a trial without a
    card ending at ``trial_end`` (default in 14 days). A ``trial_end`` already past makes Stripe end
    the trial at once: no card, so ``past_due``, as a trial that lapsed in Stripe too."""
    suffix = uuid.uuid4().hex[:8]  # the emulator keeps its records across test runs
    customer = f"cus_t{tenant_id}_{suffix}"
    params = {"id": customer, "email": f"billing+t{tenant_id}@tenants.bisman.test"}
    if converted:
        params |= {
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    client.v1.customers.create(params=params)
    sub = {
        "id": f"sub_t{tenant_id}_{suffix}",
        "customer": customer,
        "items": [{"price": prices[f"bisman_{plan}"]}],
    }
    if not converted:
        if trial_end is None:
            sub["trial_period_days"] = 14
        else:
            sub["trial_end"] = int(trial_end.timestamp())
    client.v1.subscriptions.create(params=sub)
    return sub["id"]


def state(dsn, tenant_id):
    return rows(dsn, "SELECT plan, status FROM tenants WHERE id = %s", (tenant_id,))[0]


def events(dsn, ids):
    return sorted(
        (r[0], r[1])
        for r in rows(
            dsn,
            "SELECT tenant_id, type FROM events WHERE tenant_id = ANY(%s) AND type LIKE 'trial.%%'",
            (ids,),
        )
    )


def test_a_trial_ending_exactly_now_expires_and_one_ending_a_second_later_does_not(
    conn, tenants, primary_dsn, stripe_client
):
    now = datetime.now(UTC).replace(microsecond=0)
    ending_now = tenants.add(plan="pro", status="trialing", trial_ends_at=now)
    later = tenants.add(plan="pro", status="trialing", trial_ends_at=now + timedelta(seconds=1))

    result = trial_expiry.expire_trials(conn, stripe_client, now, tenant_ids=[ending_now, later])

    assert (result.expired, result.converted) == (1, 0)
    assert state(primary_dsn, ending_now) == ("free", "active")
    assert state(primary_dsn, later) == ("pro", "trialing")


def test_an_active_subscription_converts_to_its_plan_and_an_open_one_is_cancelled(
    conn, tenants, primary_dsn, stripe_client, prices
):
    ended = datetime.now(UTC) - timedelta(hours=1)
    converted = tenants.add(plan="pro", status="trialing", trial_ends_at=ended)
    stripe_converted = subscribe(stripe_client, prices, converted, "enterprise", converted=True)
    tenants._exec(
        "UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (stripe_converted, converted)
    )
    lapsed = tenants.add(plan="pro", status="trialing", trial_ends_at=ended)
    stripe_lapsed = subscribe(stripe_client, prices, lapsed, "pro", converted=False, trial_end=ended)
    tenants._exec("UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (stripe_lapsed, lapsed))

    result = trial_expiry.expire_trials(
        conn, stripe_client, datetime.now(UTC), tenant_ids=[converted, lapsed]
    )

    assert (result.converted, result.expired, result.subscriptions_cancelled) == (1, 1, 1)
    assert state(primary_dsn, converted) == ("enterprise", "active")
    assert state(primary_dsn, lapsed) == ("free", "active")
    assert stripe_client.v1.subscriptions.retrieve(stripe_lapsed).status == "canceled"
    assert stripe_client.v1.subscriptions.retrieve(stripe_converted).status == "active"
    assert events(primary_dsn, [converted, lapsed]) == [
        (converted, "trial.converted"),
        (lapsed, "trial.expired"),
    ]


def trial_row(dsn, tenant_id):
    return rows(dsn, "SELECT plan, status, trial_ends_at FROM tenants WHERE id = %s", (tenant_id,))[0]


def test_a_trial_support_extended_in_stripe_is_not_cancelled_and_takes_stripes_trial_end(
    conn, tenants, primary_dsn, stripe_client, prices
):
    """issue 23 point 10: the database still has the old trial end; Stripe's own is later."""
    old_end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    t = tenants.add(plan="pro", status="trialing", trial_ends_at=old_end)
    sub = subscribe(stripe_client, prices, t, "pro", converted=False)
    new_end = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    stripe_client.v1.subscriptions.update(sub, params={"trial_end": int(new_end.timestamp())})  # support
    tenants._exec("UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (sub, t))

    result = trial_expiry.expire_trials(conn, stripe_client, datetime.now(UTC), tenant_ids=[t])

    assert stripe_client.v1.subscriptions.retrieve(sub).status == "trialing"
    assert trial_row(primary_dsn, t) == ("pro", "trialing", new_end)
    assert (result.expired, result.converted, result.subscriptions_cancelled, result.extended) == (0, 0, 0, 1)
    assert events(primary_dsn, [t]) == [(t, "trial.extended")]
    assert trial_expiry.notify(conn, lambda notice: None, tenant_ids=[t]).sent == 0  # no mail for it

    # A re-run: the trial is no longer over in the database either, so nothing happens.
    again = trial_expiry.expire_trials(conn, stripe_client, datetime.now(UTC), tenant_ids=[t])
    assert (again.expired, again.extended, again.subscriptions_cancelled) == (0, 0, 0)
    assert events(primary_dsn, [t]) == [(t, "trial.extended")]

    # Once the extended trial is over on both sides, it ends as any other (Stripe's status lags).
    later = trial_expiry.expire_trials(conn, stripe_client, new_end + timedelta(hours=1), tenant_ids=[t])
    assert (later.expired, later.extended, later.subscriptions_cancelled) == (1, 0, 1)
    assert state(primary_dsn, t) == ("free", "active")
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "canceled"


def test_a_trial_over_in_stripe_too_is_cancelled_while_stripe_still_says_trialing(
    conn, tenants, primary_dsn, stripe_client, prices
):
    """Stripe moves a subscription out of trialing a little after its trial_end: the trial is over
    once Stripe's trial_end has passed, whatever the status still says."""
    ends = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    t = tenants.add(plan="pro", status="trialing", trial_ends_at=ends)
    sub = subscribe(stripe_client, prices, t, "pro", converted=False, trial_end=ends)
    tenants._exec("UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (sub, t))

    result = trial_expiry.expire_trials(conn, stripe_client, ends + timedelta(seconds=1), tenant_ids=[t])

    assert (result.expired, result.extended, result.subscriptions_cancelled) == (1, 0, 1)
    assert trial_row(primary_dsn, t) == ("free", "active", ends)
    assert stripe_client.v1.subscriptions.retrieve(sub).status == "canceled"


def test_an_as_of_without_a_time_zone_is_refused(conn, stripe_client):
    with pytest.raises(ValueError, match="no time zone"):
        trial_expiry.expire_trials(conn, stripe_client, datetime(2026, 1, 5, 3), tenant_ids=[0])


def test_a_rerun_changes_nothing_and_mails_once(conn, tenants, primary_dsn, stripe_client, ctx, mail_sink):
    t = tenants.add(plan="pro", status="trialing", trial_ends_at=datetime.now(UTC) - timedelta(days=1))
    now = datetime.now(UTC)

    first = trial_expiry.expire_trials(conn, stripe_client, now, tenant_ids=[t])
    mailed = trial_expiry.notify(conn, notices.send_trial_notice, tenant_ids=[t])
    second = trial_expiry.expire_trials(conn, stripe_client, now, tenant_ids=[t])
    mailed_again = trial_expiry.notify(conn, notices.send_trial_notice, tenant_ids=[t])

    assert (first.expired, second.expired, mailed.sent, mailed_again.sent) == (1, 0, 1, 0)
    assert events(primary_dsn, [t]) == [(t, "trial.expired"), (t, "trial.notified")]
    mails = [m for m in sinks.captured_mail(ctx) if m["to"] == [f"billing+t{t}@tenants.bisman.test"]]
    assert len(mails) == 1 and "trial has ended" in mails[0]["subject"] and "Free plan" in mails[0]["text"]


def test_a_failed_trial_mail_is_retried_by_the_next_run(conn, tenants, primary_dsn, stripe_client):
    t = tenants.add(plan="pro", status="trialing", trial_ends_at=datetime.now(UTC) - timedelta(days=1))
    trial_expiry.expire_trials(conn, stripe_client, datetime.now(UTC), tenant_ids=[t])

    def down(notice):
        raise OSError("smtp down")

    failed = trial_expiry.notify(conn, down, tenant_ids=[t])
    delivered = []
    retried = trial_expiry.notify(conn, delivered.append, tenant_ids=[t])

    assert (failed.failed, failed.sent, retried.sent) == (1, 0, 1)
    assert [n["type"] for n in delivered] == ["trial.expired"]


def test_stripe_answering_500_fails_the_run_with_nothing_applied_and_the_next_run_recovers(
    conn, tenants, primary_dsn, stripe_client, prices, stripe_faults
):
    ended = datetime.now(UTC) - timedelta(hours=2)
    ids = []
    for converted in (True, False):
        t = tenants.add(plan="pro", status="trialing", trial_ends_at=ended)
        sub = subscribe(stripe_client, prices, t, "pro", converted=converted, trial_end=ended)
        tenants._exec("UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (sub, t))
        ids.append(t)
    faulty = stripe_billing.make_client(context.STRIPE_SECRET_KEY, stripe_faults.url, retries=0, timeout=5)

    stripe_faults.failing = {"*"}  # reads fail
    with pytest.raises(StripeUnavailable, match="HTTP 500"):
        trial_expiry.expire_trials(conn, faulty, datetime.now(UTC), tenant_ids=ids)
    assert [state(primary_dsn, t) for t in ids] == [("pro", "trialing")] * 2
    assert events(primary_dsn, ids) == []

    stripe_faults.failing = {"DELETE"}  # reads work, the cancel fails
    with pytest.raises(StripeUnavailable, match="1 trial"):
        trial_expiry.expire_trials(conn, faulty, datetime.now(UTC), tenant_ids=ids)
    # The converted tenant (no Stripe write needed) is done; the other is untouched, not half-applied.
    assert state(primary_dsn, ids[0]) == ("pro", "active")
    assert state(primary_dsn, ids[1]) == ("pro", "trialing")

    stripe_faults.failing = set()
    result = trial_expiry.expire_trials(conn, faulty, datetime.now(UTC), tenant_ids=ids)
    assert (result.expired, result.converted) == (1, 0)
    assert state(primary_dsn, ids[1]) == ("free", "active")
    assert events(primary_dsn, ids) == [(ids[0], "trial.converted"), (ids[1], "trial.expired")]
    cancels = [s for s in stripe_faults.seen if s.startswith("DELETE")]
    assert len(cancels) == 2  # the failed attempt and the retry, same idempotency key


def test_stripe_calls_go_through_a_bounded_pool_and_every_cancel_keeps_its_idempotency_key(
    conn, tenants, primary_dsn, stripe_client, prices, stripe_faults
):
    ended = datetime(2026, 1, 5, 3, tzinfo=UTC)
    ids = []
    for i in range(12):
        t = tenants.add(plan="pro", status="trialing", trial_ends_at=ended)
        sub = subscribe(stripe_client, prices, t, "pro", converted=i % 3 == 0, trial_end=ended)
        tenants._exec("UPDATE tenants SET stripe_subscription_id = %s WHERE id = %s", (sub, t))
        ids.append(t)
    client = stripe_billing.make_client(context.STRIPE_SECRET_KEY, stripe_faults.url, retries=0)
    stripe_faults.delay_s = 0.05

    result = trial_expiry.expire_trials(conn, client, ended + timedelta(hours=1), tenant_ids=ids,
                                        page_size=5, workers=3)

    assert (result.converted, result.expired, result.subscriptions_cancelled) == (4, 8, 8)
    assert 2 <= stripe_faults.max_in_flight <= 3  # concurrent, and never more than the pool
    assert [state(primary_dsn, t)[1] for t in ids] == ["active"] * 12
    keys = stripe_faults.idempotency_keys
    assert len(keys) == 8 and len(set(keys)) == 8
    assert all(k.startswith("bisman-trial-expiry-cancel-sub_t") for k in keys)


def test_trial_mail_goes_out_with_no_database_transaction_open(app_uri, tenants, primary_dsn, stripe_client):
    """issue 11 point 16: the notify path sends each mail outside any transaction (claim, send,
    record), as the mail_trial_notices task runs it."""
    ended = datetime.now(UTC) - timedelta(days=1)
    ids = [tenants.add(plan="pro", status="trialing", trial_ends_at=ended) for _ in range(3)]
    states = []

    with db.connect(app_uri) as c:
        trial_expiry.expire_trials(c, stripe_client, datetime.now(UTC), tenant_ids=ids)

        def send(notice):
            states.append(c.info.transaction_status)

        result = trial_expiry.notify(c, send, tenant_ids=ids)

    assert result.sent == 3
    assert states == [psycopg.pq.TransactionStatus.IDLE] * 3
    assert events(primary_dsn, ids) == sorted([(t, "trial.expired") for t in ids]
                                              + [(t, "trial.notified") for t in ids])
