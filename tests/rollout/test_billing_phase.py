"""Phase 4 as the DAG runs it, without a scheduler: each task's own function called in the DAG's
order against the sandbox (Stripe emulator, moto, the application restarted by the redeploy), from
"no endpoint" to Stripe's own delivery of the replayed triggers into ``events``; then the DAG's
shape: nothing that changes Stripe or the secret runs before the read-only checks, waits give
their worker slot back, and the next phase waits for the gate (a failed check leaves both unrun).
The sandbox's endpoint, secret and application are put back afterwards."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from bisman_ops.naming import ResourceNames
from bisman_ops.rollout import billing
from bisman_ops.rollout.billing import stripe_setup as ss
from tests.rollout.conftest import seeded_outputs
from tests.rollout.dag_shape import unrun

ROOT = Path(__file__).resolve().parents[2]
NAMES = ResourceNames("bisman-erp", "staging")


def app_secret_name() -> str:
    return NAMES.app_secret_name


def body(task):
    """The phase module's own function under a ``@step`` task (``functools.wraps`` keeps it)."""
    return task.function.__wrapped__


@pytest.fixture
def phase_env(ctx, monkeypatch):
    """The Airflow connections and settings the sandbox gives its workers; the run's context."""
    from bisman_sandbox import launcher

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    run = {"run_id": f"test_billing_phase_{uuid.uuid4().hex[:8]}", "params": {}}
    monkeypatch.setattr(billing, "context", lambda: run)
    return run


@pytest.fixture
def restored_afterwards(ctx):
    """Delete the endpoints the phase made for the sandbox domain, put the application secret's
    previous content back and restart the application with it."""
    from bisman_sandbox import app_server, aws, stripe_emulator
    from bisman_sandbox.aws import SANDBOX_DOMAIN

    sm = aws.client(ctx, "secretsmanager")
    before = sm.get_secret_value(SecretId=app_secret_name())["SecretString"]
    stripe = stripe_emulator.stripe_client(ctx)
    existing = {e["id"] for e in ss.endpoints_for(stripe, ss.webhook_url(SANDBOX_DOMAIN))}
    yield
    for e in ss.endpoints_for(stripe, ss.webhook_url(SANDBOX_DOMAIN)):
        if e["id"] not in existing:
            stripe.v1.webhook_endpoints.delete(e["id"])
    if sm.get_secret_value(SecretId=app_secret_name())["SecretString"] != before:
        sm.put_secret_value(SecretId=app_secret_name(), SecretString=before)
        app_server.down(ctx)
        app_server.up(ctx)


def poke_until_done(task, *args, timeout: float = 60):
    deadline = time.monotonic() + timeout
    poke = body(task)(*args)
    while not poke.done and time.monotonic() < deadline:
        time.sleep(1)
        poke = body(task)(*args)
    return poke


def test_phase_creates_the_endpoint_stores_its_secret_redeploys_and_stripe_delivers_into_events(
        ctx, phase_env, restored_afterwards):
    from bisman_sandbox import aws
    from bisman_sandbox.aws import SANDBOX_DOMAIN
    from bisman_sandbox.billing_impl import deployed_secret

    settings = {"environment": "staging", "domain_name": SANDBOX_DOMAIN}
    outputs = seeded_outputs(ctx)
    bills = body(billing.billing_settings_valid)(settings)
    assert body(billing.stripe_key_mode_matches_environment)(bills, outputs)["key_mode"] == "test"
    prices = body(billing.prices_active_for_their_plans)(bills, outputs).value
    plan = body(billing.webhook_endpoint_planned)(bills, outputs).value
    # `restored_afterwards` puts the sandbox back, so a roll here means an earlier run left it dirty.
    assert plan["action"] in ("create", "update", "none"), (
        f"the sandbox holds an endpoint the app secret does not know ({plan['action']}): "
        "recreate the sandbox (python -m bisman_sandbox down, remove its state folder, up)")
    applied = body(billing.stripe_configuration_applied)(bills, outputs, prices, plan, None)
    secret_id = outputs["app_secrets_arn"]
    sm = aws.client(ctx, "secretsmanager")
    values = json.loads(sm.get_secret_value(SecretId=secret_id)["SecretString"])
    assert values["STRIPE_PRICE_ID_PRO"] == prices["pro"] and values[ss.ENDPOINT_ID_KEY] == \
        applied["endpoint"]["endpoint_id"]
    assert "whsec_" not in json.dumps(applied)
    if applied["secret_changed"]:
        body(billing.app_redeployed)(outputs)
        assert poke_until_done(billing.app_rolled_out, outputs).done
    assert deployed_secret(ctx, "STRIPE_WEBHOOK_SECRET", "") == values["STRIPE_WEBHOOK_SECRET"]
    assert poke_until_done(billing.webhook_endpoint_reachable, bills).done
    assert body(billing.signed_event_accepted)(outputs)["recorded"]["events_id"] > 0
    assert 400 <= body(billing.wrongly_signed_event_refused)()["status"] < 500
    fixtures = body(billing.stripe_cli_triggers_replayed)(outputs)
    delivered = poke_until_done(billing.triggered_events_delivered, fixtures, timeout=60)
    assert delivered.done, delivered.waiting_for  # Stripe's delivery to https://<domain>/api/webhooks/stripe
    assert body(billing.checkout_session_created)(bills, outputs, prices)["status"] == "open"
    again = body(billing.webhook_endpoint_planned)(bills, outputs).value
    assert again["action"] == "none" and again["endpoint_id"] == applied["endpoint"]["endpoint_id"]


# -- the DAG's shape ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "bisman_rollout.py"))
    assert bag.import_errors == {}
    return bag.dags["bisman_rollout"]


def upstream_closure(dag, task_id: str) -> set[str]:
    seen, todo = set(), [task_id]
    while todo:
        for up in dag.get_task(todo.pop()).upstream_task_ids:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


CHANGING = ("stripe_configuration_applied", "app_redeployed", "stripe_cli_triggers_replayed",
            "checkout_session_created")
READ_ONLY = ("billing_settings_valid", "stripe_key_mode_matches_environment", "prices_active_for_their_plans",
             "webhook_endpoint_planned")
CHECKS = (*READ_ONLY, "signed_event_accepted", "wrongly_signed_event_refused")


@pytest.mark.parametrize("changing", CHANGING)
def test_every_change_waits_for_the_key_prices_and_endpoint_checks(dag, changing):
    before = upstream_closure(dag, f"billing.{changing}")
    assert {f"billing.{t}" for t in READ_ONLY} <= before


def test_the_change_waits_for_the_approval_and_the_next_phase_for_the_gate(dag):
    assert "billing.approve_webhook_secret_roll" in dag.get_task("billing.stripe_configuration_applied") \
        .upstream_task_ids
    first_of_jobs = [t for t in dag.task_ids if t.startswith("scheduled_jobs.")]
    assert all("billing.billing_gate" in upstream_closure(dag, t) for t in first_of_jobs)
    for check in ("signed_event_accepted", "wrongly_signed_event_refused", "triggered_events_delivered"):
        assert f"billing.{check}" in upstream_closure(dag, "billing.billing_gate")


@pytest.mark.parametrize("check", CHECKS)
def test_a_failed_check_leaves_the_gate_and_the_next_phase_unrun(dag, check):
    after = {t.task_id for t in dag.get_task(f"billing.{check}").get_flat_relatives(upstream=False)}
    first_of_jobs = [t.task_id for t in dag.tasks if t.task_id.startswith("scheduled_jobs.")
                     and not any(u.startswith("scheduled_jobs.") for u in t.upstream_task_ids)]
    assert "scheduled_jobs.recurring_dags_deployed" in first_of_jobs
    assert {"billing.billing_gate", *first_of_jobs} <= after
    # By their trigger rules neither runs past the failure: the gate's none_failed_min_one_success and
    # the changes' none_failed still stop on a failed upstream.
    stopped = unrun(dag, failed=(f"billing.{check}",))
    assert [t for t in ("billing.billing_gate", *first_of_jobs) if stopped.get(t) != "upstream_failed"] == []


def test_waits_hold_no_worker_slot_between_pokes(dag):
    for sensor in ("webhook_endpoint_reachable", "triggered_events_delivered", "app_rolled_out"):
        assert dag.get_task(f"billing.{sensor}").mode == "reschedule"
