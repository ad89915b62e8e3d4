"""Phase 4, billing and onboarding: the DAG's ``billing`` group.

- **Secrets**: the environment's Stripe key (the ``bisman_stripe`` connection's password, else the
  one already in the application secret) in the environment's mode (test for staging, live for
  prod) and accepted by Stripe; each plan's price (the form's ``stripe_price_id_*``, else the price
  with lookup key ``bisman_<plan>``) found, active and for its plan. ``STRIPE_SECRET_KEY``,
  ``STRIPE_WEBHOOK_SECRET``, the three ``STRIPE_PRICE_ID_*`` (and ``STRIPE_WEBHOOK_ENDPOINT_ID``, which
  endpoint the secret signs for) are merged into the application secret as one new version; the
  replaced one stays ``AWSPREVIOUS``.
- **Webhook endpoint** ``https://<domain>/api/webhooks/stripe``: found by URL or created with exactly
  the seven events of CONTRACT.md, updated when its events differ, never a second one. Its signing
  secret is stored the moment Stripe shows it (creation). An existing endpoint whose secret the
  application secret does not hold is replaced only after ``approve_webhook_secret_roll``.
- A changed secret reaches the application through a redeploy (ECS reads secrets at task start).
- **Reachable and verifying**: ``webhook_endpoint_reachable`` pokes the endpoint (reschedule mode:
  no worker slot between pokes); an event signed with the stored secret is accepted and lands in
  ``events``; one signed with another secret is refused.
- **Test mode only** (staging): the ``stripe trigger`` fixtures of ``payment_intent.succeeded`` and
  ``invoice.payment_succeeded`` replayed with the SDK, then a reschedule sensor waits until Stripe's
  own delivery has brought both events into ``events``; a Checkout Session for the pro price.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from bisman_ops import config, params
from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, Result, context, step
from bisman_ops.rollout.billing import app_secret
from bisman_ops.rollout.billing import stripe_setup as ss

HTTP_TIMEOUT_S = 10
SQL_DIR = Path(__file__).parent / "sql"
PRICE_ID_PATTERN = r"^price_[A-Za-z0-9_]+$"

PARAMS: dict[str, Param] = {
    **{f"stripe_price_id_{plan}": Param(None, type=["null", "string"], pattern=PRICE_ID_PATTERN,
                                        title=f"Stripe price id: {plan}",
                                        description=f"Empty: the price with lookup key bisman_{plan}.")
       for plan in ss.PLANS},
    "webhook_reachable_timeout_seconds": params.wait_seconds(
        600, "Webhook reachability wait (s)",
        "How long to wait for the redeployed application to answer on the webhook URL."),
    "stripe_delivery_timeout_seconds": params.wait_seconds(
        300, "Stripe webhook delivery wait (s)",
        "How long to wait for Stripe to deliver the replayed test events (staging only)."),
}


def _sql(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service)


def stripe_client(key: str) -> Any:
    from bisman_ops.clients import stripe as stripe_clients

    return stripe_clients.client_from_connection(config.STRIPE_CONN_ID, api_key=key)


def stripe_key(secret_id: str) -> tuple[str, str]:
    """(key, where it came from): the Stripe connection's password, else the application secret's."""
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret

    conn_key = BaseHook.get_connection(config.STRIPE_CONN_ID).password or ""
    if conn_key:
        mask_secret(conn_key)
        return conn_key, f"connection {config.STRIPE_CONN_ID}"
    values, _ = app_secret.read(aws("secretsmanager"), secret_id)
    key = values.get("STRIPE_SECRET_KEY") or ""
    if not key:
        raise CheckFailed("STRIPE_SECRET_KEY", f"neither in connection {config.STRIPE_CONN_ID} nor in "
                          f"{secret_id}", "the environment's Stripe secret key",
                          f"Put it in the {config.STRIPE_CONN_ID} connection's password, then clear "
                          "this task")
    mask_secret(key)
    return key, f"secret {secret_id}"


def billing_settings_from(settings: dict, params: dict) -> dict[str, Any]:
    """What the phase needs from the validated settings and its own params, checked in one place."""
    problems = []
    prices = {}
    for plan in ss.PLANS:
        value = params.get(f"stripe_price_id_{plan}")
        if value not in (None, "") and not (isinstance(value, str) and value.startswith("price_")):
            problems.append(f"stripe_price_id_{plan}={value!r} is not a price id (price_...)")
        prices[plan] = value or None
    timeouts = {}
    for key, default in (("webhook_reachable_timeout_seconds", 600),
                         ("stripe_delivery_timeout_seconds", 300)):
        value = params.get(key, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            problems.append(f"{key}={value!r} must be a positive number of seconds")
        timeouts[key] = value
    fail_unless(problems, "billing parameters", "valid values", "Trigger again with corrected values",
                {"problems": problems})
    return {"environment": settings["environment"], "domain_name": settings["domain_name"],
            "webhook_url": ss.webhook_url(settings["domain_name"]), "price_ids": prices,
            "test_mode": settings["environment"] != "prod", **timeouts}


def recorded_event(event_type: str, event_id: str) -> dict | None:
    from bisman_ops.clients import postgres

    with postgres.connect(config.APP_DB_CONN_ID, autocommit=True, application_name="bisman-rollout") as conn:
        row = conn.execute(_sql("stripe_event_recorded"), {"type": f"stripe.{event_type}",
                                                           "event_id": event_id}).fetchone()
    return None if row is None else {"events_id": row[0], "type": row[1], "occurred_at": str(row[2])}


def recorded_about(event_type: str, object_id: str) -> dict | None:
    from bisman_ops.clients import postgres

    with postgres.connect(config.APP_DB_CONN_ID, autocommit=True, application_name="bisman-rollout") as conn:
        row = conn.execute(_sql("stripe_events_about"), {"type": f"stripe.{event_type}",
                                                         "object_id": object_id}).fetchone()
    return None if row is None else {"events_id": row[0], "event_id": row[2], "occurred_at": str(row[3])}


def post_webhook(body: bytes, signature: str | None) -> Any:
    """POST to the application's webhook once (a delivery is not retried by us)."""
    from bisman_ops.clients import app_http

    headers = {"Content-Type": "application/json"}
    if signature:
        headers["Stripe-Signature"] = signature
    # HttpHook sends ``params`` as a POST's body: the exact bytes that were signed.
    return app_http.request("POST", ss.WEBHOOK_PATH, params=body, headers=headers, timeout=HTTP_TIMEOUT_S,
                            attempts=1)


def _run_id() -> str:
    return str(context()["run_id"])


# -- the checks -------------------------------------------------------------------------------------


def check_webhook_answer(status: int | str) -> Poke:
    """Reachable: the endpoint answers an unsigned POST with a 4xx refusal (verification in place)."""
    measured = {"path": ss.WEBHOOK_PATH, "unsigned_post_status": status}
    if isinstance(status, int) and 200 <= status < 300:
        raise CheckFailed(f"POST {ss.WEBHOOK_PATH} without a Stripe-Signature", f"HTTP {status} (accepted)",
                          "a 4xx refusal", "The application does not verify webhook signatures: fix it "
                          "before any Stripe event reaches it, then clear this task", measured)
    if isinstance(status, int) and 400 <= status < 500 and status not in (404, 405):
        return Poke(True, measured)
    return Poke(False, measured, f"the webhook endpoint answered {status} (waiting for a 4xx refusal of an "
                                 "unsigned event: the route live and verifying)")


def signed_event_verdict(status: int, recorded: dict | None, event: dict) -> dict[str, Any]:
    measured = {"event_id": event["id"], "type": event["type"], "status": status, "recorded": recorded}
    problems = []
    if not 200 <= status < 300:
        problems.append(f"HTTP {status} to an event signed with the stored STRIPE_WEBHOOK_SECRET")
    elif recorded is None:
        problems.append(f"accepted (HTTP {status}) but no stripe.{event['type']} row for {event['id']} "
                        "in events")
    fail_unless(problems, "a signed synthetic Stripe event", "accepted (2xx) and recorded in events",
                "Check that the application runs with the STRIPE_WEBHOOK_SECRET of the application secret "
                "(redeploy it) and can write events, then clear this task", measured)
    return measured


def wrong_secret_verdict(status: int, recorded: dict | None, event: dict) -> dict[str, Any]:
    measured = {"event_id": event["id"], "status": status, "recorded": recorded is not None}
    problems = []
    if not 400 <= status < 500:
        problems.append(f"HTTP {status} to an event signed with a wrong secret")
    if recorded is not None:
        problems.append(f"the wrongly signed event {event['id']} was recorded in events")
    fail_unless(problems, "an event signed with a wrong secret", "refused (4xx) and not recorded",
                "The application must verify Stripe-Signature with STRIPE_WEBHOOK_SECRET; fix it, then "
                "clear this task", measured)
    return measured


def delivery_poke(fixtures: dict[str, dict[str, str]]) -> Poke:
    seen = {etype: recorded_about(etype, f["object"]) for etype, f in fixtures.items()}
    measured = {"events": {etype: ({"object": fixtures[etype]["object"], **row} if row else
                                   {"object": fixtures[etype]["object"], "recorded": False})
                           for etype, row in seen.items()}}
    missing = [f"{etype} about {fixtures[etype]['object']}" for etype, row in seen.items() if row is None]
    if not missing:
        return Poke(True, measured)
    return Poke(False, measured, "Stripe's delivery has not brought into events: " + ", ".join(missing))


# -- tasks: the DAG's billing group -----------------------------------------------------------------


@step
def billing_settings_valid(settings: dict) -> dict:
    return billing_settings_from(settings, dict(context()["params"]))


@step
def stripe_key_mode_matches_environment(billing: dict, outputs: dict) -> dict:
    from bisman_ops.rollout import preflight

    key, source = stripe_key(outputs["app_secrets_arn"])
    measured = ss.key_mode_checked(key, billing["environment"], source)
    measured["stripe"] = preflight.stripe_key_authenticates(key)
    return measured


@step
def prices_active_for_their_plans(billing: dict, outputs: dict) -> Result:
    key, _ = stripe_key(outputs["app_secrets_arn"])
    prices = ss.resolve_prices(stripe_client(key), billing["price_ids"])
    return Result(value=ss.prices_checked(prices), measured={"prices": prices})


@step
def webhook_endpoint_planned(billing: dict, outputs: dict) -> Result:
    key, _ = stripe_key(outputs["app_secrets_arn"])
    values, _ = app_secret.read(aws("secretsmanager"), outputs["app_secrets_arn"])
    endpoints = ss.endpoints_for(stripe_client(key), billing["webhook_url"])
    plan = ss.plan_endpoint(endpoints, billing["webhook_url"], values.get(ss.ENDPOINT_ID_KEY),
                            bool(values.get("STRIPE_WEBHOOK_SECRET")))
    return Result(value=plan.as_dict(), measured={k: v for k, v in plan.as_dict().items() if k != "body"})


@step.short_circuit
def webhook_secret_roll_needed(plan: dict) -> bool:
    """Only an endpoint whose secret is unknown asks a person; the other actions go on without."""
    return plan["action"] == "roll"


@step(changes=True, trigger_rule="none_failed")
def stripe_configuration_applied(billing: dict, outputs: dict, prices: dict, plan: dict,
                                 answer: dict | None) -> dict:
    """The endpoint created, updated or (approved) rolled; the Stripe keys merged into the application
    secret as one version, written the moment a new signing secret exists."""
    from bisman_ops.change.approval import approved

    endpoint_plan = ss.EndpointPlan(**{k: v for k, v in plan.items() if k not in ("subject", "body")})
    if endpoint_plan.needs_approval:
        approved(answer, f"rolling the signing secret of {endpoint_plan.endpoint_id}")
    sm, secret_id, run_id = aws("secretsmanager"), outputs["app_secrets_arn"], _run_id()
    key, _ = stripe_key(secret_id)
    updates = {"STRIPE_SECRET_KEY": key, **{ss.PRICE_KEYS[p]: price for p, price in prices.items()}}
    merged: dict[str, Any] = {}

    def store(webhook: dict[str, str]) -> None:
        merged.update(app_secret.merge(sm, secret_id, {**updates, **webhook}, run_id))

    endpoint = ss.apply_endpoint(stripe_client(key), endpoint_plan, run_id, store)
    if not merged:
        merged.update(app_secret.merge(sm, secret_id, updates, run_id))
    return {"endpoint": endpoint, "secret": merged, "secret_changed": bool(merged["changed_keys"])}


@step.short_circuit(trigger_rule="none_failed")
def app_secrets_changed(applied: dict) -> bool:
    return bool(applied["secret_changed"])


@step(changes=True)
def app_redeployed(outputs: dict) -> dict:
    """A deployment that picks up the secret as it is now: one made since its last change (a retry's
    earlier try, botocore's retry of a call that reached ECS) is followed; after a change (a cleared
    and re-applied configuration) a new one is forced."""
    changed = app_secret.last_changed(aws("secretsmanager"), outputs["app_secrets_arn"])
    return app_secret.service_redeploy(aws("ecs"), outputs["ecs_cluster_name"],
                                       outputs["ecs_service_name"]).redeploy(since=changed)


@step.sensor(poke_interval=timedelta(seconds=10), timeout=timedelta(minutes=20))
def app_rolled_out(outputs: dict) -> Poke:
    done, measured = app_secret.service_redeploy(aws("ecs"), outputs["ecs_cluster_name"],
                                                 outputs["ecs_service_name"]).rolled_out()
    return Poke(done, measured, f"service {outputs['ecs_service_name']} still rolling out: {measured}")


@step.sensor(poke_interval=timedelta(seconds=10), timeout_param="webhook_reachable_timeout_seconds",
             trigger_rule="none_failed")
def webhook_endpoint_reachable(billing: dict) -> Poke:
    import requests

    try:
        status: int | str = post_webhook(b"{}", None).status_code
    except requests.RequestException as exc:
        status = f"no answer ({type(exc).__name__})"
    poke = check_webhook_answer(status)
    poke.measured["registered_url"] = billing["webhook_url"]
    return poke


@step
def signed_event_accepted(outputs: dict) -> dict:
    values, _ = app_secret.read(aws("secretsmanager"), outputs["app_secrets_arn"])
    secret = values.get("STRIPE_WEBHOOK_SECRET") or ""
    event = ss.synthetic_event(_run_id())
    body, signature = ss.signed(event, secret)
    status = post_webhook(body, signature).status_code
    return signed_event_verdict(status, recorded_event(event["type"], event["id"]), event)


@step
def wrongly_signed_event_refused() -> dict:
    import secrets

    event = ss.synthetic_event(_run_id())
    body, signature = ss.signed(event, "whsec_" + secrets.token_urlsafe(24))
    status = post_webhook(body, signature).status_code
    return wrong_secret_verdict(status, recorded_event(event["type"], event["id"]), event)


@step.short_circuit
def test_mode_checks_enabled(billing: dict) -> bool:
    """The Stripe CLI checks and the checkout make test charges: staging only."""
    return bool(billing["test_mode"])


@step(changes=True)
def stripe_cli_triggers_replayed(outputs: dict) -> dict:
    key, _ = stripe_key(outputs["app_secrets_arn"])
    return ss.replay_triggers(stripe_client(key), key, _run_id())


@step.sensor(poke_interval=timedelta(seconds=5), timeout_param="stripe_delivery_timeout_seconds")
def triggered_events_delivered(fixtures: dict) -> Poke:
    return delivery_poke(fixtures)


@step(changes=True)
def checkout_session_created(billing: dict, outputs: dict, prices: dict) -> dict:
    key, _ = stripe_key(outputs["app_secrets_arn"])
    return ss.checkout_session(stripe_client(key), key, prices["pro"], billing["domain_name"], _run_id())


@step(trigger_rule="none_failed_min_one_success")
def billing_gate(billing: dict, applied: dict) -> dict:
    return {"environment": billing["environment"], "webhook_url": billing["webhook_url"],
            "endpoint": applied["endpoint"]["endpoint_id"], "endpoint_action": applied["endpoint"]["action"],
            "test_mode_checks": billing["test_mode"], "passed": True}


@phase
def billing(settings: Any, outputs: Any) -> Phase:
    """Stripe: keys, prices and the webhook endpoint checked, then applied (a secret roll waits for a
    person); the application redeployed with the webhook secret; signed events accepted, wrongly
    signed ones refused; in test mode the Stripe CLI's events and a checkout session."""
    from airflow.sdk import chain

    from bisman_ops.change.approval import APPROVAL_TIMEOUT, ChangeApproval

    bills = billing_settings_valid(settings)
    prices = prices_active_for_their_plans(bills, outputs)
    endpoint_plan = webhook_endpoint_planned(bills, outputs)
    roll_answer = ChangeApproval(task_id="approve_webhook_secret_roll", question=endpoint_plan,
                                 response_timeout=APPROVAL_TIMEOUT)
    applied = stripe_configuration_applied(bills, outputs, prices, endpoint_plan, roll_answer.output)
    refused = wrongly_signed_event_refused()
    fixtures = stripe_cli_triggers_replayed(outputs)
    gate = billing_gate(bills, applied)
    # Read-only checks first; only an endpoint whose secret is unknown waits for a person.
    chain(bills, stripe_key_mode_matches_environment(bills, outputs), [prices, endpoint_plan],
          webhook_secret_roll_needed(endpoint_plan), roll_answer, applied)
    chain(applied, app_secrets_changed(applied), app_redeployed(outputs), app_rolled_out(outputs),
          webhook_endpoint_reachable(bills), signed_event_accepted(outputs), refused,
          test_mode_checks_enabled(bills), fixtures, triggered_events_delivered(fixtures),
          checkout_session_created(bills, outputs, prices), gate)
    refused >> gate  # prod: the test-mode checks are skipped; the gate follows the refusal
    return Phase(gate=gate)
