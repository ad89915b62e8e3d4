"""What the recurring jobs ask of Stripe: subscription states (one at a time or in bulk) and
cancelling a subscription, through ``stripe.StripeClient`` with timeouts and idempotency keys."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe

from bisman_ops import config

REQUEST_TIMEOUT_S = 20
DEFAULT_NETWORK_RETRIES = 2  # the SDK retries 5xx and timeouts; writes carry idempotency keys
PLANS = ("free", "pro", "enterprise")
OPEN_STATUSES = ("trialing", "active", "past_due", "unpaid", "incomplete")
# Above this many subscriptions, listing the account's open subscriptions (100 a page) costs
# fewer calls than fetching each one.
BULK_LOOKUP_THRESHOLD = 200
WORKERS = 8


class StripeUnavailable(RuntimeError):
    """Stripe could not be asked; nothing was decided from a partial answer."""


@dataclass(frozen=True)
class SubscriptionState:
    subscription_id: str
    status: str  # a Stripe status, or "missing" when Stripe has no such subscription
    plan: str | None
    trial_end: datetime | None = None  # Stripe's own end of the trial (support may have moved it)


def client_from_connection(conn_id: str = config.STRIPE_CONN_ID) -> stripe.StripeClient:
    """A client for the Airflow connection ``conn_id`` (the project's one Stripe client)."""
    from bisman_ops.clients import stripe as stripe_client

    return stripe_client.client_from_connection(conn_id)


def make_client(api_key: str, api_base: str, *, timeout: float = REQUEST_TIMEOUT_S,
                retries: int = DEFAULT_NETWORK_RETRIES) -> stripe.StripeClient:
    from bisman_ops.clients import stripe as stripe_client

    return stripe_client.make_client(api_key, api_base, timeout=timeout, retries=retries)


def plan_of(subscription: dict) -> str | None:
    """The BISMAN plan a subscription is for: its price's lookup key ``bisman_<plan>``, else the
    ``plan`` metadata of the price or of the subscription."""
    try:
        price = subscription["items"]["data"][0]["price"]
    except (KeyError, IndexError, TypeError):
        price = None
    candidates = []
    if price is not None:
        lookup_key = price.get("lookup_key") or ""
        candidates.append(lookup_key.removeprefix("bisman_") if lookup_key.startswith("bisman_") else None)
        candidates.append((price.get("metadata") or {}).get("plan"))
    candidates.append((subscription.get("metadata") or {}).get("plan"))
    return next((c for c in candidates if c in PLANS), None)


def _state(sub) -> SubscriptionState:
    data = sub.to_dict() if hasattr(sub, "to_dict") else sub  # SDK objects are not dicts
    trial_end = data.get("trial_end")  # unix seconds, or null for a subscription that had no trial
    return SubscriptionState(data["id"], data["status"], plan_of(data),
                             datetime.fromtimestamp(trial_end, UTC) if trial_end is not None else None)


def subscription_states(
    client: stripe.StripeClient, subscription_ids: Iterable[str]
) -> dict[str, SubscriptionState]:
    """The state of each subscription id. Raises ``StripeUnavailable`` if any lookup fails.

    Few ids: one retrieve each (concurrently). Many: one paged list per open status, keeping the
    ids asked for; an id in none of those lists is closed or missing (reported as "missing").
    """
    wanted = sorted(set(subscription_ids))
    if not wanted:
        return {}
    try:
        if len(wanted) <= BULK_LOOKUP_THRESHOLD:
            with ThreadPoolExecutor(WORKERS) as pool:
                states = list(pool.map(lambda sid: _retrieve(client, sid), wanted))
            return {s.subscription_id: s for s in states}
        found: dict[str, SubscriptionState] = {}
        wanted_set = set(wanted)
        for status in OPEN_STATUSES:
            page = client.v1.subscriptions.list(params={"status": status, "limit": 100})
            for sub in page.auto_paging_iter():
                if sub["id"] in wanted_set:
                    found[sub["id"]] = _state(sub)
        return {sid: found.get(sid, SubscriptionState(sid, "missing", None)) for sid in wanted}
    except stripe.StripeError as exc:
        raise StripeUnavailable(_describe(exc, "reading subscriptions")) from None


def subscription_state(client: stripe.StripeClient, subscription_id: str) -> SubscriptionState:
    """One subscription's state ("missing" when Stripe has none). Raises ``StripeUnavailable``."""
    try:
        return _retrieve(client, subscription_id)
    except stripe.StripeError as exc:
        raise StripeUnavailable(_describe(exc, f"reading {subscription_id}")) from None


def _retrieve(client: stripe.StripeClient, subscription_id: str) -> SubscriptionState:
    try:
        return _state(client.v1.subscriptions.retrieve(subscription_id))
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return SubscriptionState(subscription_id, "missing", None)
        raise


def cancel_subscription(client: stripe.StripeClient, subscription_id: str, idempotency_key: str) -> None:
    """Cancel now; a subscription already gone counts as cancelled. Raises ``StripeUnavailable``."""
    try:
        client.v1.subscriptions.cancel(subscription_id, options={"idempotency_key": idempotency_key})
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return
        raise StripeUnavailable(_describe(exc, f"cancelling {subscription_id}")) from None
    except stripe.StripeError as exc:
        raise StripeUnavailable(_describe(exc, f"cancelling {subscription_id}")) from None


def _describe(exc: stripe.StripeError, what: str) -> str:
    # user_message/code only: the SDK's full message can echo request details.
    status = getattr(exc, "http_status", None)
    return (f"Stripe {what} failed: {type(exc).__name__} (HTTP {status}, code {getattr(exc, 'code', None)}); "
            f"check Stripe's status and the {config.STRIPE_CONN_ID} connection, then clear the task")


def all_subscription_states(client: stripe.StripeClient) -> dict[str, SubscriptionState]:
    """Every subscription of the account, by id (one paged list). Raises ``StripeUnavailable``."""
    try:
        page = client.v1.subscriptions.list(params={"status": "all", "limit": 100})
        return {s.subscription_id: s for s in map(_state, page.auto_paging_iter())}
    except stripe.StripeError as exc:
        raise StripeUnavailable(_describe(exc, "listing subscriptions")) from None
