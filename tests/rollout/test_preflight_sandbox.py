"""Preflight checks against the sandbox's real services: moto (S3, DynamoDB, Route 53, ACM), the
Stripe emulator and the SMTP sink."""

from __future__ import annotations

import uuid

import pytest

from bisman_ops.naming import ResourceNames
from bisman_ops.rollout import preflight
from bisman_ops.rollout.gates import GateFailed
from bisman_ops.sandbox import aws, sinks
from bisman_ops.sandbox import context as sc
from bisman_ops.sandbox.context import HOST, SandboxContext
from bisman_ops.sandbox.launcher import up as sandbox_up


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    sandbox_up(c)
    return c


def test_read_calls_of_the_rollout_are_permitted_and_identity_known(ctx):
    names = ResourceNames("bisman-erp", "staging")
    assert preflight.aws_identity(aws.client(ctx, "sts"))["account"]
    probes = preflight.probe_permissions(lambda service: aws.client(ctx, service), names)
    assert set(probes.values()) == {"allowed"}


def test_missing_state_backend_fails_unless_creation_is_allowed_then_is_created_complete(ctx):
    s3, ddb = aws.client(ctx, "s3"), aws.client(ctx, "dynamodb")
    suffix = uuid.uuid4().hex[:8]
    state = preflight.inspect_state_backend(s3, ddb, f"bisman-test-{suffix}", f"bisman-test-{suffix}")
    with pytest.raises(GateFailed, match="create_state_backend"):
        preflight.state_backend_verdict(state, create_allowed=False)
    assert preflight.state_backend_verdict(state, create_allowed=True)["to_create"]
    done = preflight.ensure_state_backend(s3, ddb, state, "us-east-1", {"Project": "test"})
    assert len(done) == 4
    again = preflight.inspect_state_backend(s3, ddb, state.bucket, state.table)
    assert again.problems() == [] and again.versioned and again.encrypted and again.lock_id_hash_key_ok


def test_domain_delegated_to_route53_passes_and_an_unknown_one_fails(ctx):
    route53 = aws.client(ctx, "route53")
    measured = preflight.domain_check(route53, aws.SANDBOX_DOMAIN, resolver=lambda d: [])
    assert measured["hosted_zone"] == aws.SANDBOX_ZONE and measured["name_servers"]
    with pytest.raises(GateFailed, match="neither resolves nor has a public Route 53 hosted zone"):
        preflight.domain_check(route53, "api.nowhere-bisman.test", resolver=lambda d: [])


def test_issued_certificate_passes_and_a_pending_one_names_its_missing_validation_record(ctx):
    acm, route53 = aws.client(ctx, "acm"), aws.client(ctx, "route53")
    assert preflight.certificate_poke(acm, route53, aws.SANDBOX_DOMAIN).done
    domain = f"pending-{uuid.uuid4().hex[:6]}.{aws.SANDBOX_ZONE}"
    acm.request_certificate(DomainName=domain, ValidationMethod="DNS")
    poke = preflight.certificate_poke(acm, route53, domain)
    if poke.done:  # moto may issue at once when MOTO_ACM_VALIDATION_WAIT is short
        pytest.skip("moto issued the certificate before it could be seen pending")
    assert "validation record(s) missing" in poke.waiting_for or "not validated yet" in poke.waiting_for
    assert poke.measured["status"] == "PENDING_VALIDATION"


def test_stripe_key_authenticates_against_the_emulator_and_a_malformed_one_is_refused(ctx):
    base = ctx.url("stripe")
    assert preflight.stripe_key_authenticates(base, sc.STRIPE_SECRET_KEY)["stripe_status"] == 200
    # localstripe accepts any well-formed sk_test_ key; it refuses a malformed one, as Stripe does.
    with pytest.raises(GateFailed, match="Stripe refused STRIPE_SECRET_KEY") as excinfo:
        preflight.stripe_key_authenticates(base, "not-a-stripe-key")
    assert "not-a-stripe-key" not in str(excinfo.value)


def test_smtp_credentials_really_log_in_and_a_wrong_password_is_refused_without_echo(ctx):
    port = ctx.port("smtp")
    assert preflight.smtp_logs_in(HOST, port, sinks.SMTP_USER, sinks.SMTP_PASSWORD)["login"] == "accepted"
    with pytest.raises(GateFailed, match="credentials refused") as excinfo:
        preflight.smtp_logs_in(HOST, port, sinks.SMTP_USER, "wrong-password-123")
    assert "wrong-password-123" not in str(excinfo.value)
