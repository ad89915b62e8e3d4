"""The sandbox's Stripe emulator, driven through the real stripe SDK."""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe

from bisman_ops import config
from bisman_sandbox import stripe_emulator
from bisman_sandbox.context import SandboxContext

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    ctx = SandboxContext.from_env()
    stripe_emulator.up(ctx)
    return ctx


@pytest.fixture(scope="module")
def client(ctx) -> stripe.StripeClient:
    return stripe_emulator.stripe_client(ctx)


class _Receiver:
    """An HTTP endpoint on 127.0.0.1 that queues every webhook POSTed to it."""

    def __init__(self) -> None:
        received: queue.Queue = queue.Queue()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((body, self.headers.get("Stripe-Signature")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10) -> tuple[bytes, str]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = _Receiver()
    yield r
    r.close()


def _customer_with_card(client, email: str):
    return client.v1.customers.create(params={
        "email": email, "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"}})


def test_customer_created_through_the_sdk_reads_back(client):
    created = client.v1.customers.create(params={"email": "reader@example.test", "metadata": {"k": "v"}})
    read = client.v1.customers.retrieve(created.id)
    assert read.email == "reader@example.test"
    assert read.metadata["k"] == "v"


def test_price_is_found_by_its_lookup_key_and_the_key_cannot_be_reused(client):
    product = client.v1.products.create(params={"name": "Lookup test"})
    key = f"test_lookup_{time.time_ns()}"
    price = client.v1.prices.create(params={
        "product": product.id, "unit_amount": 1234, "currency": "usd",
        "recurring": {"interval": "month"}, "lookup_key": key, "metadata": {"plan": "x"}})
    assert (price.type, price.recurring.interval, price.unit_amount) == ("recurring", "month", 1234)

    found = client.v1.prices.list(params={"lookup_keys": [key]})
    assert [p.id for p in found.data] == [price.id]
    assert client.v1.prices.retrieve(price.id).lookup_key == key
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        client.v1.prices.create(params={"product": product.id, "unit_amount": 1, "currency": "usd",
                                        "lookup_key": key})


def test_subscription_to_a_price_is_trialing_until_trial_end_then_active(client):
    price = client.v1.prices.create(params={
        "product_data": {"name": "Trial test"}, "unit_amount": 4900, "currency": "usd",
        "recurring": {"interval": "month"}})
    customer = _customer_with_card(client, "trial@example.test")
    trial_end = int(time.time()) + 3
    sub = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"price": price.id}], "trial_end": trial_end})
    assert sub.status == "trialing"
    assert sub["items"].data[0].price.id == price.id

    deadline = time.monotonic() + 15
    while client.v1.subscriptions.retrieve(sub.id).status == "trialing" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert time.time() >= trial_end
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_trial_period_days_sets_trial_end(client):
    price = client.v1.prices.create(params={
        "product_data": {"name": "Trial days"}, "unit_amount": 100, "currency": "usd",
        "recurring": {"interval": "month"}})
    customer = client.v1.customers.create(params={"email": "days@example.test"})
    before = int(time.time())
    sub = client.v1.subscriptions.create(params={
        "customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 14})
    assert sub.status == "trialing"
    assert before + 14 * 86400 <= sub.trial_end <= int(time.time()) + 14 * 86400


def test_webhook_endpoint_receives_only_its_events_signed_with_its_secret(client, receiver):
    endpoint = client.v1.webhook_endpoints.create(params={
        "url": receiver.url, "enabled_events": ["customer.created"]})
    try:
        assert endpoint.secret.startswith("whsec_")
        assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)
        assert endpoint.id in [e.id for e in client.v1.webhook_endpoints.list().data]

        client.v1.products.create(params={"name": "Not a customer event"})
        customer = client.v1.customers.create(params={"email": "hooked@example.test"})
        body, signature = receiver.next()

        event = stripe.Webhook.construct_event(body, signature, endpoint.secret)
        assert event.type == "customer.created"
        assert event.data.object.id == customer.id
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(body, signature, "whsec_someone_else")
        with pytest.raises(queue.Empty):
            receiver.next(timeout=1.5)  # the product.created event was not for this endpoint
    finally:
        client.v1.webhook_endpoints.delete(endpoint.id)


def test_deleted_webhook_endpoint_is_gone_and_gets_no_events(client, receiver):
    endpoint = client.v1.webhook_endpoints.create(params={"url": receiver.url, "enabled_events": ["*"]})
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.webhook_endpoints.retrieve(endpoint.id)
    client.v1.customers.create(params={"email": "after-delete@example.test"})
    with pytest.raises(queue.Empty):
        receiver.next(timeout=1.5)


def test_webhook_endpoint_rejects_a_url_that_is_not_http(client):
    with pytest.raises(stripe.InvalidRequestError, match="url"):
        client.v1.webhook_endpoints.create(params={"url": "ftp://x", "enabled_events": ["*"]})


def test_seed_gives_tenants_their_database_ids_and_statuses(ctx, client):
    tenants = [("cus_sandbox_t_active", "a@t.example", "pro", "active"),
               ("cus_sandbox_t_trial", "t@t.example", "enterprise", "trialing"),
               ("cus_sandbox_t_due", "d@t.example", "pro", "past_due"),
               ("cus_sandbox_t_gone", "g@t.example", "free", "canceled")]
    first = stripe_emulator.seed(ctx, tenants)
    again = stripe_emulator.seed(ctx, tenants)

    assert first["prices"] == again["prices"]
    assert set(first["prices"]) == {"bisman_free", "bisman_pro", "bisman_enterprise"}
    for customer_id, email, plan, status in tenants:
        assert client.v1.customers.retrieve(customer_id).email == email
        sub = client.v1.subscriptions.retrieve("sub_" + customer_id.removeprefix("cus_"))
        assert (sub.customer, sub.status) == (customer_id, status)
        assert sub["items"].data[0].price.lookup_key == f"bisman_{plan}"
    assert json.loads(ctx.path("stripe", "seed.json").read_text())["prices"] == first["prices"]


def test_seed_refuses_a_past_due_free_plan(ctx):
    with pytest.raises(ValueError, match="free plan cannot be past_due"):
        stripe_emulator.seed(ctx, [("cus_sandbox_x", "x@x.example", "free", "past_due")])


def test_failed_invoice_payment_makes_the_subscription_past_due(client):
    customer = _customer_with_card(client, "declined@example.test")
    price = client.v1.prices.create(params={
        "product_data": {"name": "Decline"}, "unit_amount": 500, "currency": "usd",
        "recurring": {"interval": "month"}})
    sub = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    client.v1.customers.update(customer.id, params={
        "invoice_settings": {"default_payment_method": "pm_card_chargeCustomerFail"}})
    invoice = client.v1.invoices.create(params={"customer": customer.id, "subscription": sub.id})
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(invoice.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    failed = client.v1.events.list(params={"type": "invoice.payment_failed", "limit": 100}).data
    assert invoice.id in [e.data.object.id for e in failed]


def test_connection_points_at_the_emulator_with_the_sandbox_key(ctx):
    conn = stripe_emulator.connections(ctx)[config.STRIPE_CONN_ID]
    assert conn["conn_type"] == "generic"
    assert conn["host"] == f"http://127.0.0.1:{ctx.port('stripe')}"
    assert stripe_emulator.healthy(ctx)


def test_up_twice_keeps_the_running_process(ctx):
    from bisman_sandbox.process import read_pid

    pid = read_pid(ctx, "stripe")
    stripe_emulator.up(ctx)
    assert read_pid(ctx, "stripe") == pid


def test_restart_keeps_records_and_webhook_endpoints(ctx, receiver):
    client = stripe_emulator.stripe_client(ctx)
    customer = client.v1.customers.create(params={"email": "survivor@example.test"})
    endpoint = client.v1.webhook_endpoints.create(params={
        "url": receiver.url, "enabled_events": ["customer.updated"]})
    try:
        stripe_emulator.down(ctx)
        assert not stripe_emulator.healthy(ctx)
        stripe_emulator.up(ctx)

        assert client.v1.customers.retrieve(customer.id).email == "survivor@example.test"
        client.v1.customers.update(customer.id, params={"name": "Still here"})
        body, signature = receiver.next()
        event = stripe.Webhook.construct_event(body, signature, endpoint.secret)
        assert (event.type, event.data.object.name) == ("customer.updated", "Still here")
    finally:
        stripe_emulator.up(ctx)
        client.v1.webhook_endpoints.delete(endpoint.id)


def test_up_forgets_the_rollouts_endpoints_the_reseeded_app_secret_does_not_name(ctx):
    """After moto was re-seeded (its app secret knows no endpoint) the next rollout must find "no
    endpoint" again, not one it cannot verify; the endpoint the secret names and others stay."""
    from bisman_ops.rollout.billing import stripe_setup
    from bisman_sandbox import aws

    client = stripe_emulator.stripe_client(ctx)
    sm = aws.client(ctx, "secretsmanager")
    secret_id = aws.names("staging").app_secret_name
    before = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    url = stripe_setup.webhook_url(aws.domain("staging"))
    managed = {"managed_by": stripe_setup.MANAGED_BY}

    def create(metadata):
        return client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": ["customer.updated"],
                                                          "metadata": metadata}).id

    lost, kept, foreign = create(managed), create(managed), create({})
    try:
        sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(
            {**json.loads(before), stripe_setup.ENDPOINT_ID_KEY: kept}))
        forgotten = stripe_emulator.forget_endpoints_aws_lost(ctx)
        assert lost in forgotten and kept not in forgotten and foreign not in forgotten
        left = {e["id"] for e in stripe_setup.endpoints_for(client, url)}
        assert lost not in left and {kept, foreign} <= left
    finally:
        sm.put_secret_value(SecretId=secret_id, SecretString=before)
        for endpoint_id in (kept, foreign):
            client.v1.webhook_endpoints.delete(endpoint_id)
