"""localstripe 1.15.10 served on 127.0.0.1, plus the few Stripe APIs the project needs that it lacks.

Run by ``stripe_emulator.up`` as
``python -c "from bisman_sandbox.stripe_server import main; main()" --port P --state-dir D``
(importing, not ``-m``, so the classes below pickle under their module's name).
Everything not listed here is localstripe unchanged. Extensions:

- **WebhookEndpoint**: ``POST/GET /v1/webhook_endpoints``, ``GET/POST/DELETE /v1/webhook_endpoints/{id}``
  (``url``, ``enabled_events`` with ``*`` for all, ``description``, ``metadata``, ``disabled``). Creation
  returns ``secret`` (``whsec_...``), later reads do not, as in Stripe.
- **Webhook delivery** replaces localstripe's sender (same trigger: every event it records) to add a
  timeout, ``*`` and disabled endpoints; it signs ``t=<delivery time>,v1=HMAC-SHA256(secret, "t.body")``.
  Endpoints registered through localstripe's ``POST /_config/webhooks/{id}`` still receive events.
- **Price**: ``POST/GET /v1/prices``, ``GET/POST /v1/prices/{id}`` (``product`` or ``product_data``,
  ``unit_amount``, ``currency``, ``recurring``, ``lookup_key``, ``nickname``, ``metadata``, ``active``;
  list filters ``active``, ``product``, ``type``, ``currency``, ``lookup_keys[]``). A recurring price is
  also a Plan with the same id, as in Stripe, so subscriptions accept ``items[][price]``.
- **Trials**: ``trial_end`` / ``trial_period_days`` make a subscription ``trialing`` until ``trial_end``;
  then its first invoice is created and paid (``active``; ``past_due`` when it cannot be paid) and
  ``customer.subscription.updated`` is sent. Checked before each request and every few seconds.
- **Failed invoice payment** (``POST /v1/invoices/{id}/pay``): 402 ``card_declined``, sends
  ``invoice.payment_failed`` and moves the subscription to ``past_due``; localstripe leaves it silently open.
- **Chosen ids (sandbox seeding only)**: ``POST /v1/customers`` and ``/v1/subscriptions`` accept ``id``
  (``cus_...``, ``sub_...``) so the emulator's records match the seeded database. Real Stripe rejects it.
- **State** (localstripe's pickle) lives in ``<state-dir>/store.pickle``, not /tmp, written atomically.
- **One-off invoices** (``POST /v1/invoices`` for a customer without a subscription): an invoice of the
  customer's pending invoice items, as the ``stripe trigger invoice.payment_succeeded`` fixture makes
  (localstripe only invoices subscriptions).
- **Checkout Sessions**: ``POST /v1/checkout/sessions`` (``mode``, ``line_items[][price|quantity]``,
  ``success_url``, ``cancel_url``, ``customer``, ``customer_email``, ``client_reference_id``,
  ``metadata``) and ``GET /v1/checkout/sessions/{id}``: an ``open`` session with a ``url``; the price
  must exist and be active, recurring for ``mode=subscription``. Nobody pays it (no browser), so no
  ``checkout.session.completed``.
- **Public URLs** (``--forward https://api.staging.bisman.test=http://127.0.0.1:PORT``): a webhook
  whose URL starts with the public prefix is delivered to the local address instead (the sandbox's
  stand-in for DNS and the load balancer); the endpoint keeps its public URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import os
import pickle
import re
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from localstripe import server, webhooks
from localstripe.errors import UserError
from localstripe.resources import (
    Customer,
    Event,
    Invoice,
    Plan,
    Product,
    Store,
    StripeObject,
    Subscription,
    SubscriptionItem,
    random_id,
    schedule_webhook,
    store,
    try_convert_to_bool,
    try_convert_to_int,
)

log = logging.getLogger("bisman_ops.stripe_server")

WEBHOOK_TIMEOUT_S = 10
# Lets the API response that caused an event reach the caller before the webhook, as with Stripe.
WEBHOOK_DELAY_S = 0.3
TRIAL_SWEEP_INTERVAL_S = 2
INTERVALS = ("day", "week", "month", "year")
_EVENT_TYPE_RE = re.compile(r"^(\*|[a-z_]+(\.[a-z_]+)+)$")

_store_path: Path | None = None
_forwards: dict[str, str] = {}  # public URL prefix -> local base URL (see --forward)
_forced_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("forced_id", default=None)


# --- state file -----------------------------------------------------------------------------


def _dump_store(self: Store) -> None:
    if _store_path is None:
        return
    tmp = _store_path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, _store_path)


def _load_store(self: Store) -> None:
    if _store_path is None or not _store_path.exists():
        return
    with open(_store_path, "rb") as f:
        old = pickle.load(f)
    self.clear()
    self.update(old)


# --- chosen ids -----------------------------------------------------------------------------

_original_init = StripeObject.__init__


def _init_with_forced_id(self, id=None):
    forced = _forced_id.get()
    prefix = getattr(self, "_id_prefix", None)
    if id is None and forced is not None and prefix and forced.startswith(prefix):
        _forced_id.set(None)  # only the object being created, not the ones it creates
        id = forced
    _original_init(self, id)


def _accept_chosen_id(cls: type, prefix: str) -> None:
    original = cls._api_create

    def create(**data):
        wanted = data.pop("id", None)
        if wanted is None:
            return original(**data)
        if not isinstance(wanted, str) or not re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9_]+", wanted):
            raise UserError(400, f"id must look like {prefix}<letters, digits, _>")
        token = _forced_id.set(wanted)
        try:
            return original(**data)
        finally:
            _forced_id.reset(token)

    cls._api_create = staticmethod(create)


# --- prices ---------------------------------------------------------------------------------


class Price(StripeObject):
    object = "price"
    _id_prefix = "price_"

    def __init__(self, product=None, product_data=None, unit_amount=None, currency=None, recurring=None,
                 lookup_key=None, nickname=None, metadata=None, active=True, transfer_lookup_key=False,
                 tax_behavior=None, **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        unit_amount = try_convert_to_int(unit_amount)
        active = try_convert_to_bool(active)
        transfer_lookup_key = try_convert_to_bool(transfer_lookup_key)
        try:
            assert (product is None) != (product_data is None), "exactly one of product, product_data"
            assert product is None or isinstance(product, str), "product"
            assert product_data is None or (isinstance(product_data, dict) and product_data.get("name")), \
                "product_data[name]"
            assert isinstance(unit_amount, int) and unit_amount >= 0, "unit_amount"
            assert isinstance(currency, str) and re.fullmatch(r"[a-z]{3}", currency), "currency"
            assert isinstance(active, bool), "active"
            assert lookup_key is None or (isinstance(lookup_key, str) and 0 < len(lookup_key) <= 200), \
                "lookup_key"
            assert nickname is None or isinstance(nickname, str), "nickname"
            assert metadata is None or isinstance(metadata, dict), "metadata"
            if recurring is not None:
                assert isinstance(recurring, dict), "recurring"
                assert set(recurring) <= {"interval", "interval_count", "usage_type"}, "recurring"
                assert recurring.get("interval") in INTERVALS, "recurring[interval]"
                recurring["interval_count"] = try_convert_to_int(recurring.get("interval_count", 1))
                assert isinstance(recurring["interval_count"], int) and recurring["interval_count"] > 0, \
                    "recurring[interval_count]"
                recurring.setdefault("usage_type", "licensed")
        except AssertionError as e:
            raise UserError(400, f"Invalid {e}") from None

        holder = _price_with_lookup_key(lookup_key) if lookup_key else None
        if holder is not None and not transfer_lookup_key:
            raise UserError(400, f"A price (`{holder.id}`) already uses that lookup key.")
        if product is not None:
            Product._api_retrieve(product)  # 404 when it does not exist
        else:
            product = Product(name=product_data["name"], metadata=product_data.get("metadata")).id

        price_id = self._id_prefix + random_id(24)
        if recurring is not None:
            # Stripe serves every recurring price as a Plan too; localstripe's subscriptions need it.
            Plan(id=price_id, product=product, amount=unit_amount, currency=currency,
                 interval=recurring["interval"], interval_count=recurring["interval_count"],
                 nickname=nickname, metadata=dict(metadata or {}), active=active)
        if holder is not None:
            holder.lookup_key = None

        # All exceptions must be raised before this point (localstripe's rule: creating stores).
        super().__init__(price_id)
        self.product = product
        self.unit_amount = unit_amount
        self.unit_amount_decimal = str(unit_amount)
        self.currency = currency
        self.recurring = None if recurring is None else {
            "interval": recurring["interval"], "interval_count": recurring["interval_count"],
            "usage_type": recurring["usage_type"], "aggregate_usage": None, "trial_period_days": None}
        self.type = "one_time" if recurring is None else "recurring"
        self.billing_scheme = "per_unit"
        self.lookup_key = lookup_key
        self.nickname = nickname
        self.metadata = metadata or {}
        self.active = active
        self.tax_behavior = tax_behavior or "unspecified"
        schedule_webhook(Event("price.created", self))

    def _update(self, active=None, metadata=None, nickname=None, lookup_key=None, transfer_lookup_key=None,
                **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        if lookup_key:
            holder = _price_with_lookup_key(lookup_key)
            if holder is not None and holder is not self:
                if not try_convert_to_bool(transfer_lookup_key):
                    raise UserError(400, f"A price (`{holder.id}`) already uses that lookup key.")
                holder.lookup_key = None
            self.lookup_key = lookup_key
        if active is not None:
            self.active = try_convert_to_bool(active)
        if nickname is not None:
            self.nickname = nickname
        if metadata:
            self.metadata = {**self.metadata, **metadata}
        schedule_webhook(Event("price.updated", self))

    @classmethod
    def _api_list_all(cls, url, active=None, product=None, type=None, currency=None,
                      lookup_keys=None, limit=None, starting_after=None, **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        if isinstance(lookup_keys, str):
            lookup_keys = [lookup_keys]
        li = super()._api_list_all(url, limit=limit, starting_after=starting_after)
        active = try_convert_to_bool(active)
        li._list = [
            p for p in li._list
            if (active is None or p.active == active)
            and (product is None or p.product == product)
            and (type is None or p.type == type)
            and (currency is None or p.currency == currency)
            and (lookup_keys is None or p.lookup_key in lookup_keys)
        ]
        return li


def _price_with_lookup_key(lookup_key: str) -> Price | None:
    return next((p for k, p in store.items() if k.startswith("price:") and p.lookup_key == lookup_key), None)


def _prices_to_plans(items):
    """``items[][price]`` (today's API) to ``items[][plan]`` (what localstripe implements)."""
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item:
                item["plan"] = item.pop("price")
    return items


def _subscription_item_price(self):
    return store.get("price:" + self.plan.id) if self.plan is not None else None


# --- webhook endpoints ----------------------------------------------------------------------


class WebhookEndpoint(StripeObject):
    object = "webhook_endpoint"
    _id_prefix = "we_"

    def __init__(self, url=None, enabled_events=None, description=None, metadata=None, api_version=None,
                 **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        _check_endpoint(url, enabled_events)
        super().__init__()
        self.url = url
        self.enabled_events = enabled_events
        self.description = description
        self.metadata = metadata or {}
        self.api_version = api_version
        self.application = None
        self.status = "enabled"
        self._secret = "whsec_" + random_id(32)

    @classmethod
    def _api_create(cls, **data):
        return _WithSecret(cls(**data))

    def _update(self, url=None, enabled_events=None, description=None, metadata=None, disabled=None,
                **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        _check_endpoint(url or self.url, enabled_events or self.enabled_events)
        if url is not None:
            self.url = url
        if enabled_events is not None:
            self.enabled_events = enabled_events
        if description is not None:
            self.description = description
        if metadata:
            self.metadata = {**self.metadata, **metadata}
        if disabled is not None:
            self.status = "disabled" if try_convert_to_bool(disabled) else "enabled"

    def _wants(self, event_type: str) -> bool:
        return self.status == "enabled" and ("*" in self.enabled_events or event_type in self.enabled_events)


class _WithSecret:
    """The creation response, the only one that shows the signing secret."""

    def __init__(self, endpoint: WebhookEndpoint):
        self._endpoint = endpoint

    def _export(self, expand=None):
        return {**self._endpoint._export(expand=expand), "secret": self._endpoint._secret}


def _check_endpoint(url, enabled_events) -> None:
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise UserError(400, "Invalid URL: url must be an http(s) URL")
    if (not isinstance(enabled_events, list) or not enabled_events
            or not all(isinstance(e, str) and _EVENT_TYPE_RE.match(e) for e in enabled_events)):
        raise UserError(400, "Invalid enabled_events: a non-empty list of event types, or ['*']")


def _deliver_event(event: Event):
    """Sign and POST one event to every endpoint that wants it (replaces localstripe's sender).

    The endpoints are chosen now, when the event happens, so one created a moment later does not
    receive it; the returned coroutine delivers after a short delay."""
    targets = [(ep.id, ep.url, ep._secret) for k, ep in list(store.items())
               if k.startswith("webhook_endpoint:") and ep._wants(event.type)]
    targets += [(wid, w.url, w.secret) for wid, w in webhooks._webhooks.items()
                if w.events is None or event.type in w.events]
    return _post_event(event, targets)


async def _post_event(event: Event, targets: list[tuple[str, str, str]]) -> None:
    if not targets:
        return
    await asyncio.sleep(WEBHOOK_DELAY_S)
    payload = json.dumps(event._export(), indent=2, sort_keys=True).encode()
    timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for endpoint_id, url, secret in targets:
            url = forwarded(url)
            t = int(time.time())
            signature = hmac.new(secret.encode(), b"%d." % t + payload, hashlib.sha256).hexdigest()
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "Stripe-Signature": f"t={t},v1={signature}"}
            try:
                async with session.post(url, data=payload, headers=headers) as r:
                    log.info("webhook %s %s -> %s: HTTP %d", event.id, event.type, endpoint_id, r.status)
            except (TimeoutError, aiohttp.ClientError) as e:
                log.info("webhook %s %s -> %s failed: %s", event.id, event.type, endpoint_id,
                         type(e).__name__)


def forwarded(url: str) -> str:
    """Where a webhook for ``url`` is really sent (``--forward``), else ``url``."""
    for public, local in _forwards.items():
        if url == public or url.startswith(public.rstrip("/") + "/"):
            return local.rstrip("/") + url[len(public.rstrip("/")):]
    return url


# --- one-off invoices -----------------------------------------------------------------------

_original_invoice_create = Invoice._api_create


def _create_invoice(customer=None, subscription=None, description=None, metadata=None,
                    pending_invoice_items_behavior=None, **kwargs):
    """Stripe invoices a customer's pending items without a subscription; localstripe does not."""
    cus = Customer._api_retrieve(customer) if isinstance(customer, str) else None
    if subscription is None and cus is not None and not cus.subscriptions._list \
            and pending_invoice_items_behavior != "exclude":
        return Invoice(customer=customer, description=description, metadata=metadata)
    return _original_invoice_create(customer=customer, subscription=subscription, description=description,
                                    metadata=metadata,
                                    pending_invoice_items_behavior=pending_invoice_items_behavior, **kwargs)


# --- checkout sessions ----------------------------------------------------------------------


class CheckoutSession(StripeObject):
    object = "checkout.session"
    _id_prefix = "cs_test_"

    def __init__(self, mode=None, line_items=None, success_url=None, cancel_url=None, customer=None,
                 customer_email=None, client_reference_id=None, metadata=None, **kwargs):
        if kwargs:
            raise UserError(400, "Received unknown parameters: " + ", ".join(kwargs))
        try:
            assert mode in ("payment", "subscription", "setup"), "mode"
            assert isinstance(success_url, str) and re.match(r"^https?://", success_url), "success_url"
            assert cancel_url is None or (isinstance(cancel_url, str)
                                          and re.match(r"^https?://", cancel_url)), "cancel_url"
            assert mode == "setup" or (isinstance(line_items, list) and line_items), "line_items"
            for item in line_items or []:
                assert isinstance(item, dict) and isinstance(item.get("price"), str), "line_items[][price]"
                item["quantity"] = try_convert_to_int(item.get("quantity", 1))
                assert isinstance(item["quantity"], int) and item["quantity"] > 0, "line_items[][quantity]"
        except AssertionError as e:
            raise UserError(400, f"Invalid {e}") from None
        prices = [Price._api_retrieve(item["price"]) for item in line_items or []]  # 404 when missing
        for price in prices:
            if not price.active:
                raise UserError(400, f"The price `{price.id}` is not active.")
            if mode == "subscription" and price.type != "recurring":
                raise UserError(400, f"The price `{price.id}` is not recurring; mode=subscription needs one.")
        if customer is not None:
            Customer._api_retrieve(customer)
        super().__init__()
        self.mode = mode
        self.status = "open"
        self.payment_status = "unpaid"
        self.success_url = success_url
        self.cancel_url = cancel_url
        self.customer = customer
        self.customer_email = customer_email
        self.client_reference_id = client_reference_id
        self.metadata = metadata or {}
        self.currency = prices[0].currency if prices else None
        pairs = list(zip(prices, line_items or [], strict=True))
        self.amount_total = sum(p.unit_amount * i["quantity"] for p, i in pairs)
        self.line_items = [{"price": p.id, "quantity": i["quantity"]} for p, i in pairs]
        self.url = f"https://checkout.stripe.com/c/pay/{self.id}"
        self.expires_at = int(time.time()) + 86400


# --- trials ---------------------------------------------------------------------------------

_original_subscription_init = Subscription.__init__
_original_subscription_update = Subscription._update


def _subscription_init(self, *args, items=None, trial_end=None, trial_period_days=None, **kwargs):
    trial_period_days = try_convert_to_int(trial_period_days)
    if trial_end is None and isinstance(trial_period_days, int) and trial_period_days > 0:
        trial_end = int(time.time()) + trial_period_days * 86400
    _original_subscription_init(self, *args, items=_prices_to_plans(items), trial_end=trial_end,
                                trial_period_days=trial_period_days, **kwargs)
    if self.trial_end is None:
        return
    self.trial_start = self.start_date
    self.status = "trialing"
    _refresh_creation_event(self)
    if self.trial_end <= time.time():
        _end_trial(self)


def _refresh_creation_event(sub: Subscription) -> None:
    """localstripe built customer.subscription.created before the trial status was set: rebuild its data."""
    for key in reversed(list(store.keys())):
        event = store[key]
        if isinstance(event, Event) and event.type == "customer.subscription.created" \
                and event.data["object"]["id"] == sub.id:
            event.data = {"object": sub._export()}
            return


def _subscription_update(self, items=None, **data):
    return _original_subscription_update(self, items=_prices_to_plans(items), **data)


def _end_trial(sub: Subscription) -> None:
    """Stripe at trial end: invoice the first period; unpaid makes it past_due."""
    try:
        sub._create_invoice()
    except UserError:  # no payment method
        sub.status = "past_due"
    if sub.status == "trialing":
        sub.status = "active"
    event = Event("customer.subscription.updated", sub)
    event.data["previous_attributes"] = {"status": "trialing"}
    schedule_webhook(event)


def end_due_trials() -> int:
    due = [s for k, s in list(store.items()) if k.startswith("subscription:")
           and s.status == "trialing" and s.trial_end is not None and s.trial_end <= time.time()]
    for sub in due:
        _end_trial(sub)
    if due:
        store.dump_to_disk()
    return len(due)


async def _sweep_trials_forever(app: web.Application) -> None:
    while True:
        await asyncio.sleep(TRIAL_SWEEP_INTERVAL_S)
        try:
            end_due_trials()
        except Exception:  # keep sweeping; the next request reports the same error to its caller
            log.exception("ending due trials failed")


async def _start_sweeper(app: web.Application) -> None:
    app["trial_sweeper"] = asyncio.ensure_future(_sweep_trials_forever(app))


async def _stop_sweeper(app: web.Application) -> None:
    app["trial_sweeper"].cancel()


# --- failed invoice payments ----------------------------------------------------------------

_INVOICE_PAY_RE = re.compile(r"^/v1/invoices/(in_\w+)/pay$")


def _pay_invoice(invoice_id: str) -> Invoice:
    invoice = Invoice._api_pay_invoice(invoice_id)
    charge = invoice.charge
    if charge is not None and charge.status == "failed":
        invoice._on_payment_failure_now()  # invoice.payment_failed, subscription past_due
        raise UserError(402, charge.failure_message, {"code": charge.failure_code, "charge": charge.id})
    return invoice


@web.middleware
async def extensions_middleware(request: web.Request, handler):
    end_due_trials()
    match = _INVOICE_PAY_RE.match(request.path)
    if match and request.method == "POST":
        return server.json_response(_pay_invoice(match.group(1))._export())
    return await handler(request)


# --- wiring ---------------------------------------------------------------------------------


def install(state_dir: Path, forwards: dict[str, str] | None = None) -> web.Application:
    """Patch localstripe as described above and return its app, ready to run. Call once."""
    global _store_path
    _forwards.update(forwards or {})
    state_dir.mkdir(parents=True, exist_ok=True)
    _store_path = state_dir / "store.pickle"
    Store.dump_to_disk = _dump_store
    Store.try_load_from_disk = _load_store
    StripeObject.__init__ = _init_with_forced_id
    _accept_chosen_id(Customer, "cus_")
    _accept_chosen_id(Subscription, "sub_")
    Subscription.__init__ = _subscription_init
    Subscription._update = _subscription_update
    SubscriptionItem.price = property(_subscription_item_price)
    webhooks._send_webhook = _deliver_event
    Invoice._api_create = staticmethod(_create_invoice)

    app = server.app
    for cls, methods in ((Price, ("create", "retrieve", "update", "list")),
                         (WebhookEndpoint, ("create", "retrieve", "update", "delete", "list")),
                         (CheckoutSession, ("create", "retrieve"))):
        url = "/v1/checkout/sessions" if cls is CheckoutSession else f"/v1/{cls.object}s"
        routes = {"create": ("POST", url, server.api_create), "list": ("GET", url, server.api_list_all),
                  "retrieve": ("GET", url + "/{id}", server.api_retrieve),
                  "update": ("POST", url + "/{id}", server.api_update),
                  "delete": ("DELETE", url + "/{id}", server.api_delete)}
        for m in methods:
            method, path, make = routes[m]
            app.router.add_route(method, path, make(cls, path))
    app.middlewares.append(extensions_middleware)
    app.on_startup.append(_start_sweeper)
    app.on_cleanup.append(_stop_sweeper)
    store.try_load_from_disk()
    return app


def main(argv: list[str] | None = None) -> None:
    import sys

    parser = argparse.ArgumentParser(description="localstripe with the sandbox's extensions")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--forward", action="append", default=[], metavar="PUBLIC=LOCAL",
                        help="deliver webhooks for URLs under PUBLIC to LOCAL instead")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    forwards = dict(f.split("=", 1) for f in args.forward)
    app = install(args.state_dir, forwards)
    web.run_app(app, host=args.host, port=args.port, print=None,
                access_log=logging.getLogger("aiohttp.access"))

