"""Trial expiry: trials that ended become ``free``/``active``, or, when the tenant's Stripe
subscription is active, ``active`` on that subscription's plan. A trial whose end Stripe has moved
later (support extended it there; the database still has the old date) is not ended: the tenant
stays ``trialing`` with Stripe's ``trial_end`` (a ``trial.extended`` event, no mail).

Per page of expired trials: each trial with a subscription is asked of Stripe through one bounded
pool of workers for the whole run (its state, then, if it did not convert, is still open and its
Stripe ``trial_end`` has passed too, a cancel with an idempotency key per subscription and trial),
while the previous page is applied: every outcome of a page in one statement with its
``trial.expired``/``trial.converted``/``trial.extended`` event. A
Stripe failure for a tenant leaves that tenant untouched in the database (nothing half-applied)
and fails the run at the end, after the others are applied.
Mails go out afterwards from the recorded events (``notify``), each recorded as
``trial.notified`` once delivered, so a mail that failed is retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from bisman_ops.recurring import claims, db, stripe_billing
from bisman_ops.recurring.stripe_billing import StripeUnavailable

PAGE_SIZE = 2000
NOTIFY_WINDOW_DAYS = 30
CANCEL_STATUSES = ("trialing", "past_due", "unpaid", "incomplete")


@dataclass(frozen=True)
class TrialOutcome:
    tenant_id: int
    event_type: str  # trial.expired | trial.converted | trial.extended
    new_plan: str | None  # None: the plan stays (an extended trial)
    dedup_key: str
    payload: dict
    new_trial_ends_at: datetime | None = None  # an extended trial's end, from Stripe


@dataclass
class TrialExpiryResult:
    as_of: datetime
    expired: int = 0
    converted: int = 0
    extended: int = 0  # still trialing in Stripe: the database took Stripe's trial_end
    subscriptions_cancelled: int = 0
    stripe_failures: list[str] = field(default_factory=list)


@dataclass
class TrialNoticeResult:
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def expire_trials(conn: psycopg.Connection, stripe_client, as_of: datetime, *,
                  page_size: int = PAGE_SIZE, tenant_ids: list[int] | None = None,
                  workers: int = stripe_billing.WORKERS) -> TrialExpiryResult:
    """End every trial over at ``as_of``. Raises ``StripeUnavailable``, after everything else is
    applied, when Stripe failed for some tenants (those are left exactly as they were)."""
    if as_of.tzinfo is None:
        raise ValueError(f"as_of {as_of!r} has no time zone: trial ends are compared as instants")
    result = TrialExpiryResult(as_of=as_of)
    after_id = 0
    previous = None
    # One bounded pool for the whole run: page N+1's Stripe calls are in flight while page N is applied.
    with ThreadPoolExecutor(workers, thread_name_prefix="stripe") as pool:
        while True:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(db.sql("expired_trials"), {"as_of": as_of, "after_id": after_id,
                                                      "limit": page_size, "tenant_ids": tenant_ids})
                trials = cur.fetchall()
            current = None
            if trials:
                after_id = trials[-1]["tenant_id"]
                current = [(t, pool.submit(_ask_stripe, stripe_client, t, as_of)
                            if t["stripe_subscription_id"] else None) for t in trials]
            if previous:
                _apply(conn, _decide(previous, as_of, result), as_of, result)
            previous = current
            if not trials or len(trials) < page_size:
                break
        if previous:
            _apply(conn, _decide(previous, as_of, result), as_of, result)
    if result.stripe_failures:
        raise StripeUnavailable(
            f"{len(result.stripe_failures)} trial(s) left as they were because Stripe failed "
            f"(the others were applied): {'; '.join(result.stripe_failures[:5])}")
    return result


def _trial_key(t: dict) -> str:
    return f"{t['tenant_id']}:{t['trial_ends_at'].isoformat()}"


def _trial_running_in_stripe(state: stripe_billing.SubscriptionState | None, as_of: datetime) -> bool:
    """Stripe's own trial_end is still ahead of ``as_of``: the trial was extended there, so it is
    not over whatever the database says. The status alone is not the test: Stripe keeps a
    subscription ``trialing`` a little past its trial_end (until it has invoiced the first period),
    and such a trial is over."""
    return (state is not None and state.status in CANCEL_STATUSES
            and state.trial_end is not None and state.trial_end > as_of)


def _ask_stripe(stripe_client, t: dict, as_of: datetime) -> tuple[stripe_billing.SubscriptionState, bool]:
    """The trial's subscription state, and whether it was cancelled now (a still-open subscription
    of a trial that did not convert and is over in Stripe too; the idempotency key per subscription
    and trial makes a retry, here or in a later run, a no-op at Stripe). Raises ``StripeUnavailable``."""
    state = stripe_billing.subscription_state(stripe_client, t["stripe_subscription_id"])
    if state.status in CANCEL_STATUSES and not _trial_running_in_stripe(state, as_of):
        key = f"bisman-trial-expiry-cancel-{t['stripe_subscription_id']}-{_trial_key(t)}"
        stripe_billing.cancel_subscription(stripe_client, t["stripe_subscription_id"], key)
        return state, True
    return state, False


def _decide(page: list[tuple[dict, Future | None]], as_of: datetime,
            result: TrialExpiryResult) -> list[TrialOutcome]:
    """The outcome of each trial whose Stripe calls succeeded; the others are left out (untouched)."""
    outcomes: list[TrialOutcome] = []
    for t, future in page:
        state, cancelled = None, False
        if future is not None:
            try:
                state, cancelled = future.result()
            except StripeUnavailable as exc:
                result.stripe_failures.append(f"tenant {t['tenant_id']}: {exc}")
                continue
        trial_key = _trial_key(t)
        base = {"previous_plan": t["plan"], "trial_ends_at": t["trial_ends_at"].isoformat(),
                "stripe_subscription_id": t["stripe_subscription_id"],
                "stripe_status": state.status if state else None}
        if state is not None and state.status == "active" and state.plan:
            outcomes.append(TrialOutcome(t["tenant_id"], "trial.converted", state.plan,
                                         f"trial.converted:{trial_key}", {**base, "plan": state.plan}))
            continue
        if _trial_running_in_stripe(state, as_of):
            # Keyed by the trial it extends: a repeat is a no-op, a later extension a new event.
            outcomes.append(TrialOutcome(
                t["tenant_id"], "trial.extended", None, f"trial.extended:{trial_key}",
                {**base, "plan": t["plan"], "new_trial_ends_at": state.trial_end.isoformat()},
                new_trial_ends_at=state.trial_end))
            continue
        result.subscriptions_cancelled += cancelled
        outcomes.append(TrialOutcome(t["tenant_id"], "trial.expired", "free", f"trial.expired:{trial_key}",
                                     {**base, "plan": "free", "subscription_cancelled": cancelled}))
    return outcomes


def _apply(conn: psycopg.Connection, outcomes: list[TrialOutcome], as_of: datetime,
           result: TrialExpiryResult) -> None:
    if not outcomes:
        return
    with conn.transaction(), conn.cursor() as cur:
        db.set_statement_timeout(cur)
        cur.execute(db.sql("apply_trial_outcomes"), {
            "as_of": as_of,
            "tenant_ids": [o.tenant_id for o in outcomes],
            "new_plans": [o.new_plan for o in outcomes],
            "new_trial_ends": [o.new_trial_ends_at for o in outcomes],
            "event_types": [o.event_type for o in outcomes],
            "payloads": [Jsonb(o.payload) for o in outcomes],
            "dedup_keys": [o.dedup_key for o in outcomes],
        })
        applied = {row["tenant_id"] for row in cur.fetchall()}
    for o in outcomes:
        if o.tenant_id in applied:
            if o.event_type == "trial.converted":
                result.converted += 1
            elif o.event_type == "trial.extended":
                result.extended += 1
            else:
                result.expired += 1


def notify(
    conn: psycopg.Connection, send: Callable[[dict], None], *, batch_size: int = 200,
    tenant_ids: list[int] | None = None,
) -> TrialNoticeResult:
    """Mail every trial event of the last 30 days not mailed yet; record ``trial.notified`` for
    each one delivered. ``send`` gets the event row (type, payload, billing_email, name, slug)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(db.sql("pending_trial_notices"),
                    {"window_days": NOTIFY_WINDOW_DAYS, "tenant_ids": tenant_ids})
        pending = cur.fetchall()
    items = [claims.Claim(p["dedup_key"], p["tenant_id"], {
        "event_id": p["event_id"], "event_type": p["type"], "emailed_to": p["billing_email"]}, p)
        for p in pending]

    def deliver(claim: claims.Claim[dict]) -> None:
        if claim.item["billing_email"]:
            send(claim.item)

    outcome = claims.claim_and_send(conn, "trial.notified", items, deliver, batch_size=batch_size)
    return TrialNoticeResult(sent=len(outcome.sent), failed=outcome.failed, failures=outcome.failures)
