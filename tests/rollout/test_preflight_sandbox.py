"""Preflight checks against the sandbox's real services: moto (S3, DynamoDB, Route 53, ACM), the
Stripe emulator and the SMTP sink."""

from __future__ import annotations

import uuid

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.clients import smtp_tls
from bisman_ops.naming import ResourceNames
from bisman_ops.rollout import preflight
from bisman_sandbox import aws, sinks
from bisman_sandbox import context as sc
from bisman_sandbox.context import HOST


def test_read_calls_of_the_rollout_are_permitted_and_identity_known(ctx):
    names = ResourceNames("bisman-erp", "staging")
    assert preflight.aws_identity(aws.client(ctx, "sts"))["account"]
    probes = preflight.probe_permissions(lambda service: aws.client(ctx, service), names)
    assert set(probes.values()) == {"allowed"}


def test_missing_state_backend_fails_unless_creation_is_allowed_then_is_created_complete(ctx):
    s3, ddb = aws.client(ctx, "s3"), aws.client(ctx, "dynamodb")
    suffix = uuid.uuid4().hex[:8]
    state = preflight.inspect_state_backend(s3, ddb, f"bisman-test-{suffix}", f"bisman-test-{suffix}")
    with pytest.raises(CheckFailed, match="create_state_backend"):
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
    with pytest.raises(CheckFailed, match="neither resolves nor has a public Route 53 hosted zone"):
        preflight.domain_check(route53, "api.nowhere-bisman.test", resolver=lambda d: [])


def test_issued_certificate_passes(ctx):
    acm, route53 = aws.client(ctx, "acm"), aws.client(ctx, "route53")
    assert preflight.certificate_poke(acm, route53, aws.SANDBOX_DOMAIN).done


def test_pending_certificate_names_its_missing_validation_record_until_it_is_added(monkeypatch):
    # In-process moto with ACM's default 60 s validation wait, so the certificate is surely pending
    # (the sandbox's moto issues within a second).
    import boto3
    from moto import mock_aws

    monkeypatch.delenv("MOTO_ACM_VALIDATION_WAIT", raising=False)
    with mock_aws():
        acm = boto3.client("acm", region_name="us-east-1")
        route53 = boto3.client("route53", region_name="us-east-1")
        zone = route53.create_hosted_zone(Name="example-bisman.test", CallerReference="t")["HostedZone"]
        acm.request_certificate(DomainName="api.example-bisman.test", ValidationMethod="DNS")
        poke = preflight.certificate_poke(acm, route53, "api.example-bisman.test")
        assert not poke.done
        assert poke.measured["status"] == "PENDING_VALIDATION"
        [missing] = poke.measured["missing_validation_records"]
        assert "validation record(s) missing in Route 53 zone example-bisman.test" in poke.waiting_for
        assert missing in poke.waiting_for

        record_type, name, _, value = missing.split(" ", 3)
        route53.change_resource_record_sets(HostedZoneId=zone["Id"], ChangeBatch={"Changes": [{
            "Action": "UPSERT",
            "ResourceRecordSet": {"Name": name, "Type": record_type, "TTL": 300,
                                  "ResourceRecords": [{"Value": value}]},
        }]})
        poke = preflight.certificate_poke(acm, route53, "api.example-bisman.test")
        assert not poke.done
        assert poke.measured["missing_validation_records"] == []
        assert "ACM has not validated yet" in poke.waiting_for


def test_stripe_key_authenticates_against_the_emulator_and_a_malformed_one_is_refused(ctx, monkeypatch):
    from bisman_sandbox import launcher

    for key, value in launcher.airflow_connection_env(ctx).items():
        monkeypatch.setenv(key, value)
    assert preflight.stripe_key_authenticates(sc.STRIPE_SECRET_KEY)["stripe_status"] == 200
    # localstripe accepts any well-formed sk_test_ key; it refuses a malformed one, as Stripe does.
    with pytest.raises(CheckFailed, match="Stripe refused the key") as excinfo:
        preflight.stripe_key_authenticates("not-a-stripe-key")
    assert "not-a-stripe-key" not in str(excinfo.value)


def test_a_denied_read_call_is_reported_denied_and_a_business_error_counts_as_allowed():
    from botocore.exceptions import ClientError

    class Client:
        def __init__(self, code):
            self.code = code

        def __getattr__(self, operation):
            def call(**kwargs):
                raise ClientError({"Error": {"Code": self.code, "Message": "no"}}, operation)
            return call

    names = ResourceNames("bisman-erp", "staging")
    codes = {"s3": "AccessDenied", "rds": "DBInstanceNotFound"}
    probes = preflight.probe_permissions(
        lambda service: Client(codes.get(service, "ResourceNotFoundException")), names)
    assert probes["s3:ListObjectsV2"] == "denied (AccessDenied)"
    assert probes["rds:DescribeDbInstances"] == "allowed"
    assert [call for call, result in probes.items() if result != "allowed"] == ["s3:ListObjectsV2"]


def sink_tls(ctx):
    """A context verifying the SMTP sink's certificate, as the sandbox's smtp_default gives it."""
    return smtp_tls.context({"ca_file": str(sinks.ca_file(ctx))})


def test_smtp_credentials_really_log_in_and_a_wrong_password_is_refused_without_echo(ctx):
    port, tls = ctx.port("smtp"), sink_tls(ctx)
    accepted = preflight.smtp_logs_in(HOST, port, sinks.SMTP_USER, sinks.SMTP_PASSWORD,
                                      starttls=True, tls=tls)
    assert (accepted["login"], accepted["tls"]) == ("accepted", "STARTTLS")
    with pytest.raises(CheckFailed, match="credentials refused") as excinfo:
        preflight.smtp_logs_in(HOST, port, sinks.SMTP_USER, "wrong-password-123", starttls=True, tls=tls)
    assert "wrong-password-123" not in str(excinfo.value)


def auth_attempts(ctx, user: str) -> int:
    """How many AUTH commands for ``user`` reached the sink (it logs each, never the password)."""
    return (ctx.log_dir / f"{sinks.PROCESS}.log").read_text().count(f"for {user.encode()!r}")


def test_a_login_to_a_server_whose_certificate_does_not_verify_is_refused_before_the_password(ctx):
    """issue 23 point 7: the sink's certificate is signed by the sandbox's SMTP CA, which neither the
    system trust store nor another CA (the HTTPS listener's) vouches for: the login stops at the TLS
    handshake and the server never sees an AUTH."""
    from bisman_sandbox import tls_listener

    port, user = ctx.port("smtp"), f"probe-{uuid.uuid4().hex[:8]}"
    other_ca = smtp_tls.context({"ca_file": str(tls_listener.cert_dir(ctx) / "root.pem")})
    for tls in (None, other_ca):  # None: the system trust store
        with pytest.raises(CheckFailed) as refused:
            preflight.smtp_logs_in(HOST, port, user, "never-sent-password", starttls=True, tls=tls)
        assert refused.value.seen.startswith("TLS certificate not verified (")
        assert refused.value.seen.endswith("); the password was not sent")
    assert auth_attempts(ctx, user) == 0
    # The same probe with the sink's CA gets as far as AUTH (refused: no such user; smtplib tries
    # each mechanism), so the count above would have seen it.
    with pytest.raises(CheckFailed, match="credentials refused"):
        preflight.smtp_logs_in(HOST, port, user, "never-sent-password", starttls=True, tls=sink_tls(ctx))
    assert auth_attempts(ctx, user) > 0


def test_a_login_without_ssl_or_starttls_is_refused_and_a_connection_without_certificate_check(ctx):
    with pytest.raises(CheckFailed, match="neither SSL nor STARTTLS enabled") as refused:
        preflight.smtp_logs_in(HOST, ctx.port("smtp"), sinks.SMTP_USER, sinks.SMTP_PASSWORD)
    assert "the password was not sent" in refused.value.next_step
    with pytest.raises(smtp_tls.SmtpTlsError, match="sets ssl_context: none"):
        smtp_tls.context({"ssl_context": "none"}, "smtp_default")
    with pytest.raises(smtp_tls.SmtpTlsError, match=r"ca_file /nowhere/ca\.pem is not a readable file"):
        smtp_tls.context({"ca_file": "/nowhere/ca.pem"}, "smtp_default")
