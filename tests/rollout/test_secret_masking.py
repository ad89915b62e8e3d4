"""issue 23 point 8: what the rollout reads from the application secret, the Stripe webhook signing
secret it is given and every token it mints reach Airflow's secret masker before any log line. Each
test writes the values afterwards through Airflow's task-log processors (the masker among them) and
reads what was written; the secrets are fresh per test (moto's Secrets Manager, the Stripe emulator),
so no earlier test can have masked them."""

from __future__ import annotations

import io
import json
import uuid

import pytest
import structlog

from bisman_ops import app_tokens
from bisman_ops.rollout import preflight
from bisman_ops.rollout.billing import app_secret
from bisman_ops.rollout.billing import stripe_setup as ss

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def task_log():
    """``written(*values)``: logs each value as a task would, returns the log's text so far."""
    from airflow.sdk.log import logging_processors

    out = io.BytesIO()
    # Airflow's task-log processors (JSON, as the supervisor writes task logs), its masker included.
    log = structlog.wrap_logger(structlog.BytesLogger(out),
                                processors=list(logging_processors(json_output=True)))

    def written(*values: str) -> str:
        for value in values:
            log.info("value: %s", value)
        return out.getvalue().decode()

    return written


def fresh_secret() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {"JWT_SECRET": f"jwt-{tag}", "DB_PASSWORD": f"pw-{tag}",
            "DATABASE_URL": f"postgresql://app:url-pw-{tag}@db.internal:5432/app",
            "STRIPE_WEBHOOK_SECRET": f"whsec_{tag}", "SMTP_PASSWORD": f"smtp-{tag}",
            "STRIPE_PRICE_ID_PRO": f"price_{tag}"}


@pytest.fixture
def stored_secret(ctx):
    """``make()``: a new application-shaped secret in moto; (client, name, values). Deleted after."""
    from bisman_sandbox import aws

    sm, made = aws.client(ctx, "secretsmanager"), []

    def make():
        values, name = fresh_secret(), f"bisman-test/{uuid.uuid4().hex[:8]}/app-secrets"
        sm.create_secret(Name=name, SecretString=json.dumps(values))
        made.append(name)
        return sm, name, values

    yield make
    for name in made:
        sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.mark.parametrize("reader", [preflight.read_app_secret, lambda sm, name: app_secret.read(sm, name)[0]],
                         ids=["preflight.read_app_secret", "billing.app_secret.read"])
def test_every_value_read_from_the_application_secret_is_masked_but_the_price_id(stored_secret, task_log,
                                                                                 reader):
    sm, name, values = stored_secret()
    got = reader(sm, name)
    assert got == values
    text = task_log(*values.values(), sm.get_secret_value(SecretId=name)["SecretString"])
    for key, value in values.items():
        if key != "STRIPE_PRICE_ID_PRO":
            assert value not in text, f"{key} reached the log"
    assert text.count("***") >= 6
    assert values["STRIPE_PRICE_ID_PRO"] in text  # an identifier, left readable


def test_a_minted_token_and_its_signing_secret_are_masked(task_log):
    from airflow.sdk.log import redact

    secret = f"jwt-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    admin = app_tokens.mint(secret, role="admin")
    tenant = app_tokens.mint(secret, tenant_id=42, ttl=60)
    # The task log's own JWT filter already cuts a token to "eyJ***" in a log line; the masker is
    # what hides it everywhere else (the supervisor's output, rendered fields, exceptions): ask it.
    assert redact(admin) == "***"
    assert redact(f"Authorization: Bearer {tenant}") == "Authorization: Bearer ***"
    assert secret not in task_log(secret)


def test_generated_secrets_are_masked_as_they_are_made(task_log):
    generated = preflight.generate_secret_values(["JWT_SECRET", "DB_PASSWORD"])
    text = task_log(*generated.values())
    assert not any(value in text for value in generated.values())


@pytest.fixture
def stripe(ctx):
    from bisman_sandbox import stripe_emulator

    client = stripe_emulator.stripe_client(ctx)
    url = ss.webhook_url(f"api.t{uuid.uuid4().hex[:10]}.bisman.test")
    yield client, url
    for endpoint in ss.endpoints_for(client, url):
        client.v1.webhook_endpoints.delete(endpoint["id"])


def test_a_new_webhook_signing_secret_is_masked_before_it_is_stored(stripe, task_log):
    client, url = stripe
    plan = ss.plan_endpoint(ss.endpoints_for(client, url), url, None, False)
    seen: list[tuple[str, str]] = []

    def store(webhook: dict[str, str]) -> None:  # the first thing to see the secret
        seen.append((webhook["STRIPE_WEBHOOK_SECRET"], task_log(webhook["STRIPE_WEBHOOK_SECRET"])))

    ss.apply_endpoint(client, plan, f"run-{uuid.uuid4()}", store)
    [(secret, text)] = seen
    assert secret.startswith("whsec_") and secret not in text and "value: ***" in text
