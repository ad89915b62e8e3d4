"""The sandbox's Stripe: localstripe with the project's extensions (see ``stripe_server``) on
127.0.0.1, a ``stripe.StripeClient`` pointed at it, and the seed of plans and tenant subscriptions.

Its records survive a restart (``<state>/stripe/store.pickle``). The seed gives customers and
subscriptions the ids the seeded database uses (``cus_sandbox_<slug>``, ``sub_sandbox_<slug>``);
prices get random ids, so the seed records them in ``<state>/stripe/seed.json`` by lookup key.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass

import requests
import stripe

from bisman_ops import config
from bisman_sandbox import context
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError, is_running, start_process, stop_process, wait_until

NAME = "stripe"
REQUEST_TIMEOUT_S = 10
START_TIMEOUT_S = 30
TRIAL_DAYS = 14

# (plan, product name, monthly amount in cents); lookup keys are bisman_<plan>.
PLANS: tuple[tuple[str, str, int], ...] = (
    ("free", "BISMAN ERP Free", 0),
    ("pro", "BISMAN ERP Pro", 4900),
    ("enterprise", "BISMAN ERP Enterprise", 29900),
)
STATUSES = ("trialing", "active", "past_due", "canceled")


@dataclass(frozen=True)
class SeedTenant:
    customer_id: str
    email: str
    plan: str
    status: str

    @property
    def subscription_id(self) -> str:
        return "sub_" + self.customer_id.removeprefix("cus_")


DEFAULT_TENANTS: tuple[SeedTenant, ...] = (
    SeedTenant("cus_sandbox_acme", "billing@acme.example", "pro", "active"),
    SeedTenant("cus_sandbox_globex", "accounts@globex.example", "enterprise", "active"),
    SeedTenant("cus_sandbox_initech", "finance@initech.example", "pro", "trialing"),
    SeedTenant("cus_sandbox_umbrella", "billing@umbrella.example", "pro", "past_due"),
    SeedTenant("cus_sandbox_hooli", "ops@hooli.example", "free", "active"),
    SeedTenant("cus_sandbox_vandelay", "art@vandelay.example", "pro", "canceled"),
)


def _base_url(ctx: SandboxContext) -> str:
    return ctx.url("stripe")


def up(ctx: SandboxContext) -> dict[str, str]:
    if not healthy(ctx):
        include_dir = str(context.PROJECT_ROOT / "include")
        pythonpath = os.pathsep.join(p for p in (include_dir, os.environ.get("PYTHONPATH")) if p)
        argv = [sys.executable, "-c", "from bisman_sandbox.stripe_server import main; main()",
                "--port", str(ctx.port("stripe")), "--state-dir", str(ctx.state_dir / "stripe"),
                *forwards(ctx)]
        start_process(ctx, NAME, argv, env={"PYTHONPATH": pythonpath})
        try:
            wait_until(lambda: healthy(ctx) or not is_running(ctx, NAME), timeout=START_TIMEOUT_S,
                       what=f"Stripe emulator on {_base_url(ctx)}")
        except SandboxError as e:
            raise SandboxError(f"{e}; see {ctx.log_dir / 'stripe.log'}") from None
        if not healthy(ctx):
            raise SandboxError(f"Stripe emulator exited while starting (port {ctx.port('stripe')} taken?); "
                               f"see {ctx.log_dir / 'stripe.log'}")
    seed(ctx)  # idempotent: the sandbox tenants' customers and subscriptions, the plans' prices
    forget_endpoints_aws_lost(ctx)
    return {"stripe": f"{_base_url(ctx)} (localstripe; state in {ctx.state_dir / 'stripe'})"}


def forget_endpoints_aws_lost(ctx: SandboxContext) -> list[str]:
    """Delete the rollout's webhook endpoints whose signing secret the environment's app secret no
    longer names; returns their ids.

    Stripe's records survive a restart, moto's do not: a re-seeded app secret knows no endpoint, so a
    rollout would find one it cannot verify and ask to roll it. No real account gets into that state
    by a restart; the sandbox puts both sides back to "no endpoint yet" instead."""
    from bisman_ops.rollout.billing import stripe_setup
    from bisman_sandbox import aws

    client = stripe_client(ctx)
    sm = aws.client(ctx, "secretsmanager")
    forgotten = []
    for env in aws.SEEDED_ENVIRONMENTS:
        stored = json.loads(sm.get_secret_value(SecretId=aws.names(env).app_secret_name)["SecretString"])
        known = stored.get(stripe_setup.ENDPOINT_ID_KEY)
        for endpoint in stripe_setup.endpoints_for(client, stripe_setup.webhook_url(aws.domain(env))):
            managed = (endpoint.get("metadata") or {}).get("managed_by") == stripe_setup.MANAGED_BY
            if managed and endpoint["id"] != known:
                client.v1.webhook_endpoints.delete(endpoint["id"])
                forgotten.append(endpoint["id"])
    return forgotten


def forwards(ctx: SandboxContext) -> list[str]:
    """``--forward`` arguments: webhooks for the environments' public API domains
    (``https://api.<env>.bisman.test``, what the rollout registers) reach the local app server,
    as DNS and the load balancer would route them."""
    from bisman_sandbox.aws import SEEDED_ENVIRONMENTS, domain

    return [arg for env in SEEDED_ENVIRONMENTS
            for arg in ("--forward", f"https://{domain(env)}={ctx.url('app')}")]


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, NAME)


def healthy(ctx: SandboxContext) -> bool:
    try:
        r = requests.get(f"{_base_url(ctx)}/v1/customers", params={"limit": 1}, timeout=2,
                         headers={"Authorization": f"Bearer {context.STRIPE_SECRET_KEY}"})
    except requests.RequestException:
        return False
    return r.status_code == 200


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {
        config.STRIPE_CONN_ID: {
            "conn_type": "generic",
            "host": _base_url(ctx),
            "password": context.STRIPE_SECRET_KEY,
        }
    }


def stripe_client(ctx: SandboxContext, timeout: float = REQUEST_TIMEOUT_S) -> stripe.StripeClient:
    """A client for the emulator: no retries, so a fault shows at once."""
    base = _base_url(ctx)
    return stripe.StripeClient(
        context.STRIPE_SECRET_KEY,
        base_addresses={"api": base, "files": base, "connect": base, "meter_events": base},
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=0,
    )


def configure_stripe_sdk(ctx: SandboxContext, timeout: float = REQUEST_TIMEOUT_S) -> None:
    """Point the SDK's module-level API (``stripe.Customer.create`` ...) at the emulator."""
    stripe.api_key = context.STRIPE_SECRET_KEY
    stripe.api_base = _base_url(ctx)
    stripe.default_http_client = stripe.RequestsClient(timeout=timeout)
    stripe.max_network_retries = 0


def seed(ctx: SandboxContext, tenants: tuple[SeedTenant, ...] | list = DEFAULT_TENANTS) -> dict:
    """Products and monthly prices for each plan, then each tenant's customer and subscription in
    the given status. Idempotent: existing records are kept as they are. Returns (and writes to
    ``<state>/stripe/seed.json``) the price ids by lookup key and the tenants seeded."""
    tenants = [t if isinstance(t, SeedTenant) else SeedTenant(*t) for t in tenants]
    for t in tenants:
        _validate(t)
    client = stripe_client(ctx)
    prices = {f"bisman_{plan}": _ensure_price(client, plan, name, amount) for plan, name, amount in PLANS}
    for t in tenants:
        _ensure_customer(client, t)
        _ensure_subscription(client, t, prices[f"bisman_{t.plan}"])
    result = {"prices": prices, "tenants": [{**asdict(t), "subscription_id": t.subscription_id}
                                            for t in tenants]}
    ctx.path("stripe", "seed.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _validate(t: SeedTenant) -> None:
    if not t.customer_id.startswith("cus_"):
        raise ValueError(f"seed customer id {t.customer_id!r} must start with cus_")
    if t.plan not in {p for p, _, _ in PLANS}:
        raise ValueError(f"seed tenant {t.customer_id}: unknown plan {t.plan!r}")
    if t.status not in STATUSES:
        raise ValueError(f"seed tenant {t.customer_id}: status {t.status!r} not one of {', '.join(STATUSES)}")
    if t.status == "past_due" and t.plan == "free":
        raise ValueError(f"seed tenant {t.customer_id}: a free plan cannot be past_due (nothing to pay)")


def _ensure_price(client: stripe.StripeClient, plan: str, name: str, amount: int) -> str:
    lookup_key = f"bisman_{plan}"
    found = client.v1.prices.list(params={"lookup_keys": [lookup_key], "limit": 1})
    if found.data:
        return found.data[0].id
    product_id = f"prod_bisman_{plan}"
    try:
        client.v1.products.retrieve(product_id)
    except stripe.InvalidRequestError:
        client.v1.products.create(params={"id": product_id, "name": name, "metadata": {"plan": plan}})
    price = client.v1.prices.create(params={
        "product": product_id, "unit_amount": amount, "currency": "usd",
        "recurring": {"interval": "month"}, "lookup_key": lookup_key, "metadata": {"plan": plan}})
    return price.id


def _exists(retrieve, object_id: str) -> bool:
    try:
        retrieve(object_id)
    except stripe.InvalidRequestError:
        return False
    return True


def _ensure_customer(client: stripe.StripeClient, t: SeedTenant) -> None:
    if _exists(client.v1.customers.retrieve, t.customer_id):
        return
    params: dict = {"id": t.customer_id, "email": t.email, "metadata": {"sandbox": "true"}}
    if t.status != "trialing":  # a trialing tenant has not given a card yet
        params["payment_method"] = "pm_card_visa"
        params["invoice_settings"] = {"default_payment_method": "pm_card_visa"}
    client.v1.customers.create(params=params)


def _ensure_subscription(client: stripe.StripeClient, t: SeedTenant, price_id: str) -> None:
    if _exists(client.v1.subscriptions.retrieve, t.subscription_id):
        return
    params: dict = {"id": t.subscription_id, "customer": t.customer_id, "items": [{"price": price_id}],
                    "metadata": {"plan": t.plan}}
    if t.status == "trialing":
        params["trial_period_days"] = TRIAL_DAYS
    client.v1.subscriptions.create(params=params)
    if t.status == "past_due":
        # The renewal fails the way it does in Stripe: the card now declines the next invoice.
        client.v1.customers.update(t.customer_id, params={
            "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}})
        invoice = client.v1.invoices.create(
            params={"customer": t.customer_id, "subscription": t.subscription_id})
        try:
            client.v1.invoices.pay(invoice.id)
        except stripe.CardError:
            pass
    elif t.status == "canceled":
        client.v1.subscriptions.cancel(t.subscription_id)
    status = client.v1.subscriptions.retrieve(t.subscription_id).status
    if status != t.status:
        raise SandboxError(
            f"seeding {t.subscription_id}: the Stripe emulator left it {status!r}, expected {t.status!r}")
