"""Phase 4's checks without a scheduler, against the sandbox's real services: the Stripe emulator
(endpoints, prices, the CLI's triggers, Checkout), moto's Secrets Manager, the stand-in application's
webhook and its events table. A live key in staging, an endpoint with six of the seven events and a
wrong webhook secret each fail (or are corrected) naming what was seen; the DAG runs nothing that
changes Stripe or the secret before the read-only checks."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import billing
from bisman_ops.rollout.billing import app_secret
from bisman_ops.rollout.billing import stripe_setup as ss

SIX_EVENTS = [e for e in ss.WEBHOOK_EVENTS if e != "checkout.session.completed"]


@pytest.fixture
def airflow_env(ctx, monkeypatch):
    from bisman_sandbox import launcher

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def stripe(ctx):
    from bisman_sandbox import stripe_emulator

    return stripe_emulator.stripe_client(ctx)


@pytest.fixture
def url(stripe):
    """A webhook URL of its own per test, so tests never see each other's endpoints; its endpoints are
    deleted afterwards (left behind, Stripe's every later event would also go to their dead host)."""
    own = ss.webhook_url(f"api.t{uuid.uuid4().hex[:10]}.bisman.test")
    yield own
    for endpoint in ss.endpoints_for(stripe, own):
        stripe.v1.webhook_endpoints.delete(endpoint["id"])


# -- the key ------------------------------------------------------------------------------------------


def test_live_key_in_staging_fails_naming_the_mode_seen():
    with pytest.raises(CheckFailed) as failed:
        ss.key_mode_checked("sk_live_" + "a" * 24, "staging", "connection bisman_stripe")
    assert "a live key in staging" in str(failed.value)
    assert "sk_live_aaaa" not in str(failed.value) and failed.value.measured["key_mode"] == "live"


def test_test_key_in_prod_fails_and_the_environments_own_mode_passes():
    with pytest.raises(CheckFailed, match="a test key in prod"):
        ss.key_mode_checked("sk_test_" + "b" * 24, "prod", "secret")
    assert ss.key_mode_checked("sk_test_" + "b" * 24, "staging", "secret")["key_mode"] == "test"


def test_triggers_and_checkout_are_refused_for_a_live_key_before_any_call():
    class NoCalls:
        def __getattr__(self, name):
            raise AssertionError(f"Stripe was called ({name}) with a live key")

    with pytest.raises(CheckFailed, match="a live key"):
        ss.replay_triggers(NoCalls(), "sk_live_" + "c" * 24, "run")
    with pytest.raises(CheckFailed, match="a live key"):
        ss.checkout_session(NoCalls(), "sk_live_" + "c" * 24, "price_x", "api.x.test", "run")


# -- prices -------------------------------------------------------------------------------------------


def test_each_plans_price_is_found_by_lookup_key_active_and_for_its_plan(stripe):
    prices = ss.resolve_prices(stripe, {"free": None, "pro": None, "enterprise": None})
    ids = ss.prices_checked(prices)
    assert set(ids) == {"free", "pro", "enterprise"} and all(v.startswith("price_") for v in ids.values())
    assert {p["for_plan"] for p in prices.values()} == {"free", "pro", "enterprise"}


def test_a_price_of_another_plan_or_archived_or_missing_fails_naming_it(stripe):
    pro = ss.resolve_prices(stripe, {})["pro"]["id"]
    archived = stripe.v1.prices.create(params={"product": "prod_bisman_enterprise", "unit_amount": 100,
                                               "currency": "usd", "recurring": {"interval": "month"},
                                               "metadata": {"plan": "enterprise"}})
    stripe.v1.prices.update(archived.id, params={"active": False})
    prices = ss.resolve_prices(stripe, {"free": pro, "enterprise": archived.id, "pro": "price_nothere"})
    with pytest.raises(CheckFailed) as failed:
        ss.prices_checked(prices)
    message = str(failed.value)
    assert f"STRIPE_PRICE_ID_FREE: price {pro} belongs to plan 'pro', not 'free'" in message
    assert f"STRIPE_PRICE_ID_ENTERPRISE: price {archived.id} is archived" in message
    assert "STRIPE_PRICE_ID_PRO: no price price_nothere" in message


# -- the webhook endpoint -----------------------------------------------------------------------------


def test_no_endpoint_is_created_with_the_seven_events_and_its_secret_stored_once(stripe, url):
    plan = ss.plan_endpoint(ss.endpoints_for(stripe, url), url, None, False)
    assert plan.action == "create" and not plan.needs_approval
    stored: list[dict] = []
    done = ss.apply_endpoint(stripe, plan, f"run-{uuid.uuid4()}", stored.append)
    assert len(stored) == 1 and stored[0]["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert stored[0][ss.ENDPOINT_ID_KEY] == done["endpoint_id"] and "whsec_" not in json.dumps(done)
    found = ss.endpoints_for(stripe, url)
    assert [e["id"] for e in found] == [done["endpoint_id"]]
    assert sorted(found[0]["enabled_events"]) == sorted(ss.WEBHOOK_EVENTS)
    again = ss.plan_endpoint(found, url, done["endpoint_id"], True)
    assert again.action == "none"  # a second rollout creates no second endpoint


def test_endpoint_with_six_of_the_seven_events_is_updated_to_exactly_the_seven(stripe, url):
    ep = stripe.v1.webhook_endpoints.create(params={"url": url, "enabled_events": SIX_EVENTS})
    plan = ss.plan_endpoint(ss.endpoints_for(stripe, url), url, ep.id, True)
    assert plan.action == "update" and plan.missing_events == ["checkout.session.completed"]
    assert "missing checkout.session.completed" in plan.reason
    done = ss.apply_endpoint(stripe, plan, "run", lambda _: pytest.fail("an update stores no secret"))
    assert done["added"] == ["checkout.session.completed"] and not done["secret_changed"]
    after = stripe.v1.webhook_endpoints.retrieve(ep.id)
    assert sorted(after.enabled_events) == sorted(ss.WEBHOOK_EVENTS)
    assert [e["id"] for e in ss.endpoints_for(stripe, url)] == [ep.id]


def test_endpoint_whose_secret_is_unknown_is_rolled_only_with_an_approval(stripe, url):
    ep = stripe.v1.webhook_endpoints.create(params={"url": url, "enabled_events": list(ss.WEBHOOK_EVENTS)})
    plan = ss.plan_endpoint(ss.endpoints_for(stripe, url), url, "we_someotherendpoint", True)
    assert plan.action == "roll" and plan.needs_approval
    question = plan.as_dict()
    assert ep.id in question["subject"] and "Reject" in question["body"]
    from bisman_ops.change.approval import approved

    with pytest.raises(CheckFailed, match="Approve by a person"):
        approved(None, "rolling the signing secret")
    stored: list[dict] = []
    done = ss.apply_endpoint(stripe, plan, "run", stored.append)
    assert done["replaced"] == ep.id and stored[0][ss.ENDPOINT_ID_KEY] == done["endpoint_id"]
    assert [e["id"] for e in ss.endpoints_for(stripe, url)] == [done["endpoint_id"]]


def test_two_endpoints_for_the_url_fail_naming_both(stripe, url):
    a = stripe.v1.webhook_endpoints.create(params={"url": url, "enabled_events": list(ss.WEBHOOK_EVENTS)})
    b = stripe.v1.webhook_endpoints.create(params={"url": url, "enabled_events": list(ss.WEBHOOK_EVENTS)})
    with pytest.raises(CheckFailed) as failed:
        ss.plan_endpoint(ss.endpoints_for(stripe, url), url, a.id, True)
    assert f"2 endpoints ({a.id}, {b.id})" in str(failed.value)


# -- the application secret ---------------------------------------------------------------------------


def test_merge_keeps_other_keys_stages_the_old_version_awsprevious_and_repeats_as_a_no_op(ctx, monkeypatch):
    from bisman_sandbox import aws

    monkeypatch.setattr("airflow.sdk.log.mask_secret", lambda *a, **k: None, raising=False)
    sm = aws.client(ctx, "secretsmanager")
    name = f"bisman-test/{uuid.uuid4().hex[:8]}/app-secrets"
    first = sm.create_secret(Name=name, SecretString=json.dumps({"JWT_SECRET": "j" * 40,
                                                                 "STRIPE_PRICE_ID_PRO": "price_old"}))
    updates = {"STRIPE_PRICE_ID_PRO": "price_new", "STRIPE_WEBHOOK_SECRET": "whsec_" + "n" * 30}
    merged = app_secret.merge(sm, name, updates, "run-1")
    assert merged["changed_keys"] == ["STRIPE_PRICE_ID_PRO", "STRIPE_WEBHOOK_SECRET"]
    assert merged["previous_version"] == first["VersionId"] and merged["previous_is_awsprevious"]
    values, _ = app_secret.read(sm, name)
    assert values == {"JWT_SECRET": "j" * 40, **updates}
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["STRIPE_PRICE_ID_PRO"] == "price_old"
    assert "whsec_nnn" not in json.dumps(merged)
    assert app_secret.merge(sm, name, updates, "run-1")["changed_keys"] == []


# -- the application's webhook ------------------------------------------------------------------------


def deployed_webhook_secret(ctx) -> str:
    from bisman_sandbox import context as sc
    from bisman_sandbox.billing_impl import deployed_secret

    return deployed_secret(ctx, "STRIPE_WEBHOOK_SECRET", sc.STRIPE_WEBHOOK_SECRET)


def test_webhook_answers_an_unsigned_post_with_a_refusal_so_it_is_reachable(ctx, airflow_env):
    poke = billing.check_webhook_answer(billing.post_webhook(b"{}", None).status_code)
    assert poke.done and 400 <= poke.measured["unsigned_post_status"] < 500
    assert not billing.check_webhook_answer("no answer (ConnectionError)").done
    with pytest.raises(CheckFailed, match="HTTP 200 \\(accepted\\)"):
        billing.check_webhook_answer(200)


def test_event_signed_with_the_deployed_secret_lands_in_events_and_a_wrong_one_is_refused(ctx, airflow_env):
    good = ss.synthetic_event("test-run")
    body, sig = ss.signed(good, deployed_webhook_secret(ctx))
    status = billing.post_webhook(body, sig).status_code
    measured = billing.signed_event_verdict(status, billing.recorded_event(good["type"], good["id"]), good)
    assert measured["recorded"]["events_id"] > 0

    bad = ss.synthetic_event("test-run")
    body, sig = ss.signed(bad, "whsec_" + uuid.uuid4().hex)
    status = billing.post_webhook(body, sig).status_code
    assert 400 <= billing.wrong_secret_verdict(status, billing.recorded_event(bad["type"], bad["id"]),
                                               bad)["status"] < 500


def test_a_wrong_stored_webhook_secret_fails_the_signed_event_check_naming_the_status(ctx, airflow_env):
    event = ss.synthetic_event("test-run")
    body, sig = ss.signed(event, "whsec_" + uuid.uuid4().hex)  # what the secret holds, not the app
    status = billing.post_webhook(body, sig).status_code
    with pytest.raises(CheckFailed) as failed:
        billing.signed_event_verdict(status, billing.recorded_event(event["type"], event["id"]), event)
    assert f"HTTP {status} to an event signed with the stored STRIPE_WEBHOOK_SECRET" in str(failed.value)
    assert "redeploy" in str(failed.value)


def test_an_app_that_accepts_a_wrongly_signed_event_fails_the_refusal_check():
    event = ss.synthetic_event("r")
    with pytest.raises(CheckFailed, match="HTTP 200 to an event signed with a wrong secret"):
        billing.wrong_secret_verdict(200, {"events_id": 1}, event)


# -- the Stripe CLI's triggers and Checkout -----------------------------------------------------------


@pytest.fixture
def delivery_to_app(ctx):
    """Stripe's delivery to the application with the secret it runs with (localstripe's own webhook
    registration), muted again afterwards."""
    from bisman_sandbox import context as sc

    hook_id = f"billing_test_{uuid.uuid4().hex[:8]}"
    base = ctx.url("stripe")
    target = f"{ctx.url('app')}{ss.WEBHOOK_PATH}"
    auth = {"Authorization": f"Bearer {sc.STRIPE_SECRET_KEY}"}
    r = requests.post(f"{base}/_config/webhooks/{hook_id}", headers=auth, timeout=10,
                      data={"url": target, "secret": deployed_webhook_secret(ctx),
                            "events[]": ["payment_intent.succeeded", "invoice.payment_succeeded"]})
    r.raise_for_status()
    yield
    requests.post(f"{base}/_config/webhooks/{hook_id}", headers=auth, timeout=10,
                  data={"url": target, "secret": "whsec_muted", "events[]": ["none.muted"]})


def test_replayed_triggers_are_delivered_by_stripe_into_events(ctx, airflow_env, stripe, delivery_to_app):
    from bisman_sandbox import context as sc

    fixtures = ss.replay_triggers(stripe, sc.STRIPE_SECRET_KEY, f"test-{uuid.uuid4()}")
    assert fixtures["payment_intent.succeeded"]["status"] == "succeeded"
    assert fixtures["invoice.payment_succeeded"]["status"] == "paid"
    deadline = time.monotonic() + 30
    poke = billing.delivery_poke(fixtures)
    while not poke.done and time.monotonic() < deadline:
        time.sleep(0.5)
        poke = billing.delivery_poke(fixtures)
    assert poke.done, poke.waiting_for
    assert all(e["event_id"].startswith("evt_") for e in poke.measured["events"].values())


def test_delivery_not_arrived_keeps_waiting_and_names_what_is_missing(ctx, airflow_env):
    poke = billing.delivery_poke({"invoice.payment_succeeded": {"object": "in_never_delivered"}})
    assert not poke.done and "invoice.payment_succeeded about in_never_delivered" in poke.waiting_for


def test_checkout_session_for_the_pro_price_is_open_and_an_archived_price_is_refused(stripe):
    from bisman_sandbox import context as sc

    pro = ss.resolve_prices(stripe, {})["pro"]["id"]
    measured = ss.checkout_session(stripe, sc.STRIPE_SECRET_KEY, pro, "api.staging.bisman.test", "run")
    assert measured["status"] == "open" and measured["has_url"] and measured["amount_total"] == 4900
    old = stripe.v1.prices.create(params={"product": "prod_bisman_pro", "unit_amount": 1,
                                          "currency": "usd", "recurring": {"interval": "month"}})
    stripe.v1.prices.update(old.id, params={"active": False})
    import stripe as stripe_sdk

    with pytest.raises(stripe_sdk.InvalidRequestError, match="not active"):
        ss.checkout_session(stripe, sc.STRIPE_SECRET_KEY, old.id, "api.staging.bisman.test", "run")


# -- settings -------------------------------------------------------------------------------------------


def test_bad_billing_params_are_named_and_empty_prices_mean_lookup_keys():
    settings = {"environment": "staging", "domain_name": "api.staging.bisman.test"}
    with pytest.raises(CheckFailed, match="stripe_price_id_pro='prod_x' is not a price id"):
        billing.billing_settings_from(settings, {"stripe_price_id_pro": "prod_x"})
    b = billing.billing_settings_from(settings, {})
    assert b["price_ids"] == {"free": None, "pro": None, "enterprise": None}
    assert b["webhook_url"] == "https://api.staging.bisman.test/api/webhooks/stripe" and b["test_mode"]
    assert not billing.billing_settings_from({**settings, "environment": "prod"}, {})["test_mode"]


# -- the redeploy (AWS's implementation) ---------------------------------------------------------------


@pytest.fixture
def ecs_service(ctx):
    """A service of its own in moto's ECS (the sandbox's application service is left alone)."""
    from bisman_sandbox import aws

    ecs = aws.client(ctx, "ecs")
    cluster = f"redeploy-{uuid.uuid4().hex[:8]}"
    ecs.create_cluster(clusterName=cluster)
    family = ecs.register_task_definition(
        family=cluster, containerDefinitions=[{"name": "app", "image": "app:1", "memory": 128}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=cluster, serviceName="app", taskDefinition=family, desiredCount=1)
    yield ecs, cluster
    ecs.delete_service(cluster=cluster, service="app", force=True)
    ecs.deregister_task_definition(taskDefinition=family)
    ecs.delete_cluster(cluster=cluster)


def test_a_retried_redeploy_follows_the_deployment_its_run_started_instead_of_forcing_another(ecs_service):
    from datetime import UTC, datetime

    ecs, cluster = ecs_service
    time.sleep(0.01)  # the service's first deployment is older than the run
    run_started = datetime.now(UTC)
    redeploy = app_secret.EcsForceNewDeployment(ecs, cluster, "app")

    first = redeploy.redeploy(since=run_started)
    retried = redeploy.redeploy(since=run_started)

    assert first["deployed"] is True and retried["deployed"] is False
    assert retried["deployment"] == first["deployment"]
    deployments = ecs.describe_services(cluster=cluster, services=["app"])["services"][0]["deployments"]
    assert [d["id"] for d in deployments if d["status"] == "PRIMARY"] == [first["deployment"]]
    # A later run (started after that deployment) deploys again.
    later = redeploy.redeploy(since=datetime.now(UTC))
    assert later["deployed"] is True and later["deployment"] != first["deployment"]


class FailedDeploymentEcs:
    """ECS answering with a deployment its circuit breaker failed (moto never fails one)."""

    def __init__(self):
        from datetime import UTC, datetime

        self.updates = 0
        self.primary = {"id": "ecs-svc/1", "status": "PRIMARY", "rolloutState": "FAILED",
                        "rolloutStateReason": "tasks failed to start", "runningCount": 0,
                        "desiredCount": 2, "createdAt": datetime.now(UTC)}

    def describe_services(self, cluster, services):
        return {"services": [{"deployments": [dict(self.primary)]}]}

    def update_service(self, cluster, service, forceNewDeployment):
        self.updates += 1
        self.primary = {**self.primary, "id": f"ecs-svc/{self.updates + 1}", "rolloutState": "IN_PROGRESS"}
        return {"service": {"deployments": [dict(self.primary)]}}


def test_a_failed_deployment_fails_the_roll_out_wait_at_once_and_a_retry_deploys_anew():
    from datetime import UTC, datetime, timedelta

    ecs = FailedDeploymentEcs()
    redeploy = app_secret.EcsForceNewDeployment(ecs, "c", "app")
    with pytest.raises(CheckFailed) as failed:
        redeploy.rolled_out()
    assert "deployment ecs-svc/1 of app" in str(failed.value)
    assert "FAILED: tasks failed to start" in str(failed.value)
    # The failed deployment is this run's, yet a retry forces a new one rather than follow it.
    retried = redeploy.redeploy(since=datetime.now(UTC) - timedelta(minutes=5))
    assert (retried["deployed"], retried["deployment"], ecs.updates) == (True, "ecs-svc/2", 1)
    assert redeploy.rolled_out()[0] is False  # IN_PROGRESS: the wait goes on


def test_a_secret_changed_after_the_last_deployment_is_deployed_again(ctx, ecs_service):
    """A cleared and re-applied configuration rewrites the secret within the same run: the
    deployment the run made before that change has not picked it up, so a new one is forced."""
    from bisman_sandbox import aws

    ecs, cluster = ecs_service
    sm = aws.client(ctx, "secretsmanager")
    secret = sm.create_secret(Name=f"redeploy-{uuid.uuid4().hex[:8]}", SecretString="{}")["ARN"]
    try:
        time.sleep(1.1)  # Secrets Manager dates to the second: the service's deployment is older
        sm.put_secret_value(SecretId=secret, SecretString='{"STRIPE_WEBHOOK_SECRET": "whsec_a"}')
        redeploy = app_secret.EcsForceNewDeployment(ecs, cluster, "app")
        first = redeploy.redeploy(since=app_secret.last_changed(sm, secret))
        retried = redeploy.redeploy(since=app_secret.last_changed(sm, secret))
        time.sleep(1.1)
        sm.put_secret_value(SecretId=secret, SecretString='{"STRIPE_WEBHOOK_SECRET": "whsec_b"}')
        after_change = redeploy.redeploy(since=app_secret.last_changed(sm, secret))
    finally:
        sm.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)
    assert (first["deployed"], retried["deployed"], after_change["deployed"]) == (True, False, True)
    assert retried["deployment"] == first["deployment"] != after_change["deployment"]
