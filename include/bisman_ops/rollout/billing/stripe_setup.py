"""Phase 4's Stripe side, on plain values and a ``stripe.StripeClient``: the key's mode, the plans'
prices, the webhook endpoint (found, planned, created, updated or rolled), the ``stripe trigger``
fixtures replayed with the SDK, and the Checkout Session for the pro price.

Nothing here returns or raises a secret's value. The one place a signing secret is seen (Stripe's
answer to a creation) hands it straight to ``store`` and returns only the endpoint's id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bisman_ops.change.errors import CheckFailed, fail_unless

# CONTRACT.md: the events the application's webhook handles, exactly these.
WEBHOOK_EVENTS = (
    "payment_intent.succeeded",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "checkout.session.completed",
)
WEBHOOK_PATH = "/api/webhooks/stripe"
PLANS = ("free", "pro", "enterprise")
KEY_MODE = {"staging": "test", "prod": "live"}
PRICE_KEYS = {plan: f"STRIPE_PRICE_ID_{plan.upper()}" for plan in PLANS}
ENDPOINT_ID_KEY = "STRIPE_WEBHOOK_ENDPOINT_ID"  # which endpoint STRIPE_WEBHOOK_SECRET signs for
MANAGED_BY = "bisman-rollout"


def plain(obj: Any) -> Any:
    """An SDK object as plain dicts and lists (the SDK's objects are not dicts)."""
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def webhook_url(domain: str) -> str:
    return f"https://{domain}{WEBHOOK_PATH}"


def lookup_key(plan: str) -> str:
    """The lookup key a plan's price carries when no price id is given (``bisman_<plan>``)."""
    return f"bisman_{plan}"


# -- the key ----------------------------------------------------------------------------------------


def key_mode(key: str) -> str:
    """``test``, ``live`` or what the prefix says instead (never the key)."""
    for prefix, mode in (("sk_test_", "test"), ("sk_live_", "live"), ("rk_test_", "restricted test"),
                         ("rk_live_", "restricted live"), ("pk_test_", "publishable test"),
                         ("pk_live_", "publishable live")):
        if key.startswith(prefix):
            return mode
    return "unrecognised"


def key_mode_checked(key: str, environment: str, source: str) -> dict[str, Any]:
    """The key is a secret key in the environment's mode: test for staging, live for prod."""
    mode = key_mode(key)
    measured = {"key_mode": mode, "environment": environment, "key_source": source,
                "key_shape": f"{key[:8]}… ({len(key)} chars)" if mode != "unrecognised"
                else f"{len(key)} chars"}
    wanted = KEY_MODE[environment]
    if mode != wanted:
        raise CheckFailed(f"STRIPE_SECRET_KEY mode ({source})", f"a {mode} key in {environment}",
                          f"a {wanted} secret key (sk_{wanted}_...) for {environment}",
                          "Put the environment's own Stripe key in place, then clear this task; nothing "
                          "was changed", measured)
    return measured


# -- prices -----------------------------------------------------------------------------------------


def price_plan(price: Any, product: Any | None) -> str | None:
    """The plan a price is for: its lookup key ``bisman_<plan>``, else ``metadata.plan`` of the price,
    else of its product."""
    lk = price.get("lookup_key") or ""
    if lk.startswith("bisman_") and lk.removeprefix("bisman_") in PLANS:
        return lk.removeprefix("bisman_")
    for source in (price, product or {}):
        plan = ((source.get("metadata") or {}).get("plan")) if source else None
        if plan:
            return str(plan)
    return None


def resolve_prices(client: Any, wanted: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """Each plan's price as Stripe has it: by the id given, else by lookup key ``bisman_<plan>``.
    ``{plan: {"id", "found", "active", "for_plan", "type", "unit_amount", ...}}``."""
    import stripe

    found: dict[str, dict[str, Any]] = {}
    for plan in PLANS:
        price_id = wanted.get(plan)
        asked_by = "param" if price_id else f"lookup key {lookup_key(plan)}"
        entry: dict[str, Any] = {"id": price_id, "asked_by": asked_by}
        try:
            if price_id:
                price = plain(client.v1.prices.retrieve(price_id))
            else:
                listed = client.v1.prices.list(params={"lookup_keys": [lookup_key(plan)], "limit": 1}).data
                price = plain(listed[0]) if listed else None
        except stripe.InvalidRequestError:
            price = None
        if price is None:
            found[plan] = {**entry, "found": False}
            continue
        product = None
        if isinstance(price.get("product"), str):
            try:
                product = plain(client.v1.products.retrieve(price["product"]))
            except stripe.InvalidRequestError:
                product = None
        found[plan] = {**entry, "id": price["id"], "found": True, "active": bool(price.get("active")),
                       "for_plan": price_plan(price, product), "type": price.get("type"),
                       "unit_amount": price.get("unit_amount"), "currency": price.get("currency"),
                       "livemode": price.get("livemode")}
    return found


def prices_problems(prices: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for plan, p in prices.items():
        if not p["found"]:
            problems.append(f"{PRICE_KEYS[plan]}: no price {p['id'] or 'found'} ({p['asked_by']})")
        elif not p["active"]:
            problems.append(f"{PRICE_KEYS[plan]}: price {p['id']} is archived (active=false)")
        elif p["for_plan"] != plan:
            problems.append(f"{PRICE_KEYS[plan]}: price {p['id']} belongs to plan {p['for_plan']!r}, "
                            f"not {plan!r}")
    return problems


def prices_checked(prices: dict[str, dict[str, Any]]) -> dict[str, str]:
    fail_unless(prices_problems(prices), "Stripe prices of the plans",
                "each plan's price found, active and belonging to that plan (lookup key bisman_<plan> or "
                "metadata.plan)",
                "Fix the price ids in the form (stripe_price_id_*) or the prices in Stripe, then clear this "
                "task; nothing was changed", {"prices": prices})
    return {plan: p["id"] for plan, p in prices.items()}


# -- the webhook endpoint ---------------------------------------------------------------------------


@dataclass
class EndpointPlan:
    """What the rollout will do to the webhook endpoint of ``url``."""

    url: str
    action: str  # "none" | "create" | "update" | "roll"
    endpoint_id: str | None = None
    events_now: list[str] = field(default_factory=list)
    missing_events: list[str] = field(default_factory=list)
    extra_events: list[str] = field(default_factory=list)
    disabled: bool = False
    secret_known: bool = False
    reason: str = ""

    @property
    def needs_approval(self) -> bool:
        return self.action == "roll"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.needs_approval:
            d["subject"] = f"Roll the Stripe webhook signing secret of {self.endpoint_id}?"
            d["body"] = (
                f"The endpoint {self.endpoint_id} ({self.url}) exists, but the application secret does not "
                "hold its signing secret (Stripe shows it only at creation), so the application cannot "
                "verify the events it sends.\n\n"
                "**Approve** replaces the endpoint with a new one (same URL, exactly the seven events of "
                "CONTRACT.md), stores the new signing secret in the application secret and deletes the "
                f"old endpoint. Events sent to {self.url} in between may be refused and are retried by "
                "Stripe.\n\n**Reject** (or no answer) stops the rollout with nothing changed."
            )
        return d


def endpoints_for(client: Any, url: str) -> list[Any]:
    """Every webhook endpoint of the account whose URL is ``url`` (all pages)."""
    found, params = [], {"limit": 100}
    while True:
        page = plain(client.v1.webhook_endpoints.list(params=params))
        data = page.get("data") or []
        found += [e for e in data if e.get("url") == url]
        if not page.get("has_more") or not data:
            return found
        params = {"limit": 100, "starting_after": data[-1]["id"]}


def plan_endpoint(endpoints: list[Any], url: str, stored_endpoint_id: str | None,
                  stored_secret_present: bool) -> EndpointPlan:
    """Find by URL; never a second one. The stored secret is known to sign for an endpoint only when
    the application secret records that endpoint's id next to it (written when it was created)."""
    if len(endpoints) > 1:
        ids = ", ".join(e["id"] for e in endpoints)
        raise CheckFailed(f"Stripe webhook endpoints for {url}", f"{len(endpoints)} endpoints ({ids})",
                          "at most one", "Delete the extra ones in the Stripe dashboard (keep the one "
                          f"whose id the application secret names in {ENDPOINT_ID_KEY}), then clear this "
                          "task; nothing was changed", {"endpoints": ids})
    if not endpoints:
        return EndpointPlan(url, "create", reason="no endpoint for this URL")
    ep = endpoints[0]
    events = sorted(ep.get("enabled_events") or [])
    plan = EndpointPlan(url, "none", endpoint_id=ep["id"], events_now=events,
                        missing_events=sorted(set(WEBHOOK_EVENTS) - set(events)),
                        extra_events=sorted(set(events) - set(WEBHOOK_EVENTS)),
                        disabled=ep.get("status") == "disabled",
                        secret_known=stored_secret_present and stored_endpoint_id == ep["id"])
    if not plan.secret_known:
        plan.action = "roll"
        plan.reason = (f"the application secret's {ENDPOINT_ID_KEY} is {stored_endpoint_id or 'not set'}, "
                       f"not {ep['id']}: its signing secret is unknown")
    elif plan.missing_events or plan.extra_events or plan.disabled:
        plan.action = "update"
        plan.reason = "; ".join(x for x in (
            f"missing {', '.join(plan.missing_events)}" if plan.missing_events else "",
            f"extra {', '.join(plan.extra_events)}" if plan.extra_events else "",
            "disabled" if plan.disabled else "") if x)
    else:
        plan.reason = "exactly the seven events, enabled, secret known"
    return plan


def _create_endpoint(client: Any, url: str, run_id: str) -> tuple[str, str]:
    created = client.v1.webhook_endpoints.create(
        params={"url": url, "enabled_events": list(WEBHOOK_EVENTS),
                "description": "BISMAN ERP application webhook",
                "metadata": {"managed_by": MANAGED_BY, "run_id": run_id[:200]}},
        options={"idempotency_key": f"bisman-webhook-{uuid.uuid5(uuid.NAMESPACE_URL, run_id + url)}"})
    from bisman_ops.change.redact import mask_in_logs

    mask_in_logs(created["secret"])  # the signing secret, masked before anything can log it
    return created["id"], created["secret"]


def apply_endpoint(client: Any, plan: EndpointPlan, run_id: str,
                   store: Callable[[dict[str, str]], None]) -> dict[str, Any]:
    """Carry out ``plan``. A new signing secret goes to ``store({STRIPE_WEBHOOK_SECRET, endpoint id})``
    before anything else happens (Stripe never shows it again)."""
    if plan.action == "none":
        return {"action": "none", "endpoint_id": plan.endpoint_id, "secret_changed": False}
    if plan.action == "update":
        client.v1.webhook_endpoints.update(plan.endpoint_id, params={
            "enabled_events": list(WEBHOOK_EVENTS), "disabled": False})
        return {"action": "update", "endpoint_id": plan.endpoint_id, "added": plan.missing_events,
                "removed": plan.extra_events, "re_enabled": plan.disabled, "secret_changed": False}
    if plan.action in ("create", "roll"):
        new_id, secret = _create_endpoint(client, plan.url, run_id)
        store({"STRIPE_WEBHOOK_SECRET": secret, ENDPOINT_ID_KEY: new_id})
        done: dict[str, Any] = {"action": plan.action, "endpoint_id": new_id, "secret_changed": True,
                                "events": list(WEBHOOK_EVENTS)}
        if plan.action == "roll":
            client.v1.webhook_endpoints.delete(plan.endpoint_id)  # after the new one and its secret exist
            done["replaced"] = plan.endpoint_id
        return done
    raise ValueError(f"unknown endpoint action {plan.action!r}")


# -- signed events ----------------------------------------------------------------------------------


def synthetic_event(run_id: str) -> dict[str, Any]:
    """A Stripe-shaped ``payment_intent.succeeded`` that belongs to no customer, marked as the
    rollout's probe (the application records it; nothing is charged)."""
    suffix = uuid.uuid4().hex[:20]
    return {
        "id": f"evt_bisman_probe_{suffix}", "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()), "livemode": False, "pending_webhooks": 0,
        "type": "payment_intent.succeeded",
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": f"pi_bisman_probe_{suffix}", "object": "payment_intent", "amount": 0,
                            "currency": "usd", "status": "succeeded", "customer": None,
                            "metadata": {"bisman_rollout_probe": "true", "run_id": run_id[:200]}}},
    }


def signed(event: dict[str, Any], secret: str, at: int | None = None) -> tuple[bytes, str]:
    """The body and ``Stripe-Signature`` header Stripe would send (``t=..,v1=HMAC-SHA256``)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    t = int(time.time()) if at is None else at
    v1 = hmac.new(secret.encode(), b"%d." % t + body, hashlib.sha256).hexdigest()
    return body, f"t={t},v1={v1}"


# -- the Stripe CLI's triggers, replayed ------------------------------------------------------------


def refuse_live(key: str, what: str) -> None:
    if key_mode(key) != "test":
        raise CheckFailed(what, f"a {key_mode(key)} key", "a test-mode key (sk_test_...)",
                          "Test charges run in test mode only; this step never runs against a live key")


def replay_triggers(client: Any, key: str, run_id: str) -> dict[str, dict[str, str]]:
    """The ordinary API calls behind ``stripe trigger payment_intent.succeeded`` and ``stripe trigger
    invoice.payment_succeeded`` (the CLI's fixtures, with ``pm_card_visa``), made with the SDK.
    ``{event type: {"object": id the event is about}}``. Test mode only."""
    refuse_live(key, "replaying the Stripe CLI's triggers")
    meta = {"bisman_rollout_trigger": "true", "run_id": run_id[:200]}
    pi = client.v1.payment_intents.create(params={
        "amount": 2000, "currency": "usd", "payment_method": "pm_card_visa",
        "payment_method_types": ["card"], "metadata": meta})
    pi = plain(client.v1.payment_intents.confirm(pi["id"]))
    customer = client.v1.customers.create(params={
        "description": "(created by bisman-rollout, as the Stripe CLI's trigger)", "metadata": meta,
        "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    client.v1.invoice_items.create(params={"amount": 2000, "currency": "usd", "customer": customer["id"],
                                           "description": "(created by bisman-rollout)"})
    invoice = client.v1.invoices.create(params={"customer": customer["id"],
                                                "pending_invoice_items_behavior": "include"})
    paid = plain(client.v1.invoices.pay(invoice["id"]))
    return {"payment_intent.succeeded": {"object": pi["id"], "status": pi.get("status")},
            "invoice.payment_succeeded": {"object": invoice["id"], "status": paid.get("status"),
                                          "customer": customer["id"]}}


def checkout_session(client: Any, key: str, price_id: str, domain: str, run_id: str) -> dict[str, Any]:
    """A subscription Checkout Session for ``price_id`` (nobody pays it; it expires on its own)."""
    refuse_live(key, "creating a test Checkout Session")
    session = plain(client.v1.checkout.sessions.create(params={
        "mode": "subscription", "line_items": [{"price": price_id, "quantity": 1}],
        "success_url": f"https://{domain}/billing/success?session_id={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"https://{domain}/billing/cancel",
        "metadata": {"bisman_rollout_check": "true", "run_id": run_id[:200]}}))
    measured = {"session_id": session["id"], "status": session.get("status"), "mode": session.get("mode"),
                "price": price_id, "amount_total": session.get("amount_total"),
                "has_url": bool(session.get("url"))}
    if session.get("status") != "open" or not session.get("url"):
        raise CheckFailed(f"Checkout Session for {price_id}", f"status {session.get('status')}, "
                          f"url {'present' if session.get('url') else 'missing'}", "open with a payment URL",
                          "Check the price and the account's Checkout settings, then clear this task",
                          measured)
    return measured
