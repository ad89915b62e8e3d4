"""Weekly audit against the sandbox PostgreSQL, the Stripe emulator and moto."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from bisman_ops import naming
from bisman_ops.recurring import weekly_audit
from bisman_sandbox import aws, stripe_emulator

SERVICES = ("rds", "ec2", "wafv2", "elbv2", "secretsmanager", "acm", "s3")
# The week's announcement is recorded as an event and as its (recorded) claim.
FORGET_ANNOUNCEMENT = ("DELETE FROM events WHERE dedup_key = 'audit.completed:2023-W09'; "
                       "DELETE FROM bisman_ops_claims WHERE dedup_key = 'audit.completed:2023-W09'")


@pytest.fixture(scope="module")
def aws_clients(ctx):
    return {s: aws.client(ctx, s) for s in SERVICES}


@pytest.fixture(scope="module")
def names():
    return naming.ResourceNames("bisman-erp", "staging")


@pytest.mark.parametrize(
    ("run_at", "label", "start"),
    [
        (datetime(2026, 3, 15, 0, 0, tzinfo=UTC), "2026-W10", date(2026, 3, 2)),  # the Sunday 00:00 run
        (datetime(2026, 3, 11, 9, 0, tzinfo=UTC), "2026-W10", date(2026, 3, 2)),  # a manual run mid-week
        (datetime(2027, 1, 3, 0, 0, tzinfo=UTC), "2026-W52", date(2026, 12, 21)),  # across the year
        (datetime(2021, 1, 10, 0, 0, tzinfo=UTC), "2020-W53", date(2020, 12, 28)),  # a 53-week year
    ],
)
def test_the_audited_week_is_the_iso_week_before_the_run(run_at, label, start):
    week = weekly_audit.previous_iso_week(run_at)
    assert (week.label, week.start, week.end) == (label, start, start + timedelta(days=6))


def test_security_groups_open_to_the_internet_on_database_ports_are_findings(aws_clients):
    ec2 = aws_clients["ec2"]
    name = f"audit-test-{uuid.uuid4().hex[:8]}"
    sg = ec2.create_security_group(GroupName=name, Description="audit test")["GroupId"]
    try:
        ec2.authorize_security_group_ingress(
            GroupId=sg,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 6000,
                    "ToPort": 6500,
                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                },
                {
                    "IpProtocol": "tcp",
                    "FromPort": 5432,
                    "ToPort": 5432,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                },
            ],
        )
        findings = weekly_audit.security_findings(aws_clients, "no-such-alb", datetime.now(UTC))
    finally:
        ec2.delete_security_group(GroupId=sg)
    mine = [f["detail"] for f in findings if f["kind"] == "security_group_open" and sg in f["resource"]]
    assert mine == ["port 6379 open to the internet", "port 6432 open to the internet"]


def test_a_publicly_accessible_database_and_an_alb_without_waf_are_findings(aws_clients, names):
    rds = aws_clients["rds"]
    ident = f"audit-public-{uuid.uuid4().hex[:6]}"
    rds.create_db_instance(
        DBInstanceIdentifier=ident,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="x",
        MasterUserPassword="not-a-secret-123",
        AllocatedStorage=20,
        PubliclyAccessible=True,
    )
    try:
        findings = weekly_audit.security_findings(aws_clients, names.alb_name, datetime.now(UTC))
        missing_alb = weekly_audit.security_findings(aws_clients, "no-such-alb", datetime.now(UTC))
    finally:
        rds.delete_db_instance(DBInstanceIdentifier=ident, SkipFinalSnapshot=True)
    assert {
        "kind": "rds_publicly_accessible",
        "resource": ident,
        "detail": "RDS instance is publicly accessible",
    } in findings
    # The seeded ALB has its web ACL; the audit looks it up rather than assuming.
    assert not any(f["kind"] == "waf_not_associated" for f in findings)
    assert any(f["kind"] == "alb_missing" for f in missing_alb)


def test_secrets_past_90_days_are_findings(aws_clients):
    now = datetime.now(UTC)
    # moto dates every secret "now": audit as of a day 100 days ahead, when they have aged.
    later = weekly_audit.security_findings(aws_clients, "no-such-alb", now + timedelta(days=100))
    assert "secret_not_rotated" in {f["kind"] for f in later}
    today = weekly_audit.security_findings(aws_clients, "no-such-alb", now)
    assert not any(f["kind"] == "secret_not_rotated" for f in today)


def _self_signed(domain: str, not_before: datetime, not_after: datetime) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before)
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_a_certificate_expiring_within_30_days_is_a_finding_and_one_beyond_is_not(aws_clients):
    domain = f"audit-{uuid.uuid4().hex[:8]}.bisman.test"
    # moto refuses an already expired certificate, so it expires 60 days out at a midnight; the audit
    # dates are fixed relative to that expiry, not read from the clock.
    expires = datetime.combine(datetime.now(UTC).date() + timedelta(days=60), datetime.min.time(), UTC)
    cert, key = _self_signed(domain, expires - timedelta(days=120), expires)
    arn = aws_clients["acm"].import_certificate(Certificate=cert, PrivateKey=key)["CertificateArn"]
    try:
        soon = weekly_audit.security_findings(aws_clients, "no-such-alb", expires - timedelta(days=17))
        early = weekly_audit.security_findings(aws_clients, "no-such-alb", expires - timedelta(days=31))
    finally:
        aws_clients["acm"].delete_certificate(CertificateArn=arn)
    mine = [f for f in soon if f["kind"] == "certificate_expiring" and f["resource"] == domain]
    assert mine == [{"kind": "certificate_expiring", "resource": domain,
                     "detail": f"expires {expires.date().isoformat()} (< 30 days)"}]
    assert not any(f["kind"] == "certificate_expiring" and f["resource"] == domain for f in early)


def test_stripe_reconciliation_lists_tenants_that_disagree_with_their_subscription(ctx, tenants):
    client = stripe_emulator.stripe_client(ctx)
    prices = stripe_emulator.seed(ctx)["prices"]
    suffix = uuid.uuid4().hex[:8]
    customer = client.v1.customers.create(
        params={
            "id": f"cus_audit_{suffix}",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "id": f"sub_audit_{suffix}",
            "customer": customer.id,
            "items": [{"price": prices["bisman_pro"]}],
        }
    )
    agrees = tenants.add(plan="pro", status="active", stripe_subscription_id=sub.id)
    wrong_plan = tenants.add(plan="enterprise", status="active", stripe_subscription_id=sub.id)
    unknown = tenants.add(plan="pro", status="active", stripe_subscription_id=f"sub_gone_{suffix}")
    downgraded = tenants.add(plan="free", status="active", stripe_subscription_id=f"sub_gone_{suffix}")
    billed = [
        {"tenant_id": t, "slug": f"test-t{t}", "plan": p, "status": "active", "stripe_subscription_id": s}
        for t, p, s in (
            (agrees, "pro", sub.id),
            (wrong_plan, "enterprise", sub.id),
            (unknown, "pro", f"sub_gone_{suffix}"),
            (downgraded, "free", f"sub_gone_{suffix}"),
        )
    ]

    mismatches = weekly_audit.reconcile_stripe(client, billed)

    assert {m["tenant_id"]: m["problems"] for m in mismatches} == {
        wrong_plan: ["plan enterprise here, pro in Stripe"],
        unknown: ["status active here, missing in Stripe"],
    }


def test_the_audit_writes_json_and_markdown_to_s3_and_announces_the_week_once(
    conn, ctx, tenants, aws_clients, names, primary_dsn
):
    run_at = datetime(2023, 3, 12, 0, 0, tzinfo=UTC)  # audits 2023-W09, 27 Feb to 5 Mar
    t = tenants.add(
        plan="free",
        created_at=datetime(2023, 2, 28, tzinfo=UTC),
        trial_ends_at=datetime(2023, 3, 14, tzinfo=UTC),
    )
    tenants.usage(t, date(2023, 3, 1), "api_calls", 1234)
    tenants._exec(
        "INSERT INTO events (tenant_id, type, payload, occurred_at) VALUES "
        "(%(t)s, 'stripe.invoice.payment_failed', %(inv)s, '2023-03-02T10:00Z'), "
        "(%(t)s, 'quota.alert', %(qa)s, '2023-03-03T10:00Z'), "
        "(%(t)s, 'trial.expired', '{}', '2023-03-04T10:00Z')",
        {
            "t": t,
            "inv": json.dumps({"data": {"object": {"id": "in_test", "amount_due": 4900}}}),
            "qa": json.dumps(
                {
                    "threshold": 100,
                    "metric": "api_calls",
                    "period": "day",
                    "period_start": "2023-03-03",
                    "used": 1234,
                    "quota": 1000,
                }
            ),
        },
    )
    tenants._exec(FORGET_ANNOUNCEMENT)
    stripe = stripe_emulator.stripe_client(ctx)
    announced = []

    def run():
        return weekly_audit.run_audit(
            conn,
            stripe,
            aws_clients,
            bucket=names.state_bucket,
            alb_name=names.alb_name,
            run_at=run_at,
            announce=lambda report, uris: announced.append(uris),
        )

    try:
        first, second = run(), run()
    finally:
        tenants._exec(FORGET_ANNOUNCEMENT)

    assert (first.announced, second.announced, len(announced)) == (True, False, 1)
    body = (
        aws_clients["s3"]
        .get_object(Bucket=names.state_bucket, Key="reports/audit/2023-W09/report.json")["Body"]
        .read()
    )
    report = json.loads(body)
    assert report["usage"]["api_calls"]["total"] >= 1234
    assert {
        "tenant_id": t,
        "slug": f"test-t{t}",
        "invoice": "in_test",
        "amount_due": 4900,
        "occurred_at": "2023-03-02T10:00:00+00:00",
    } in report["payment_failures"]
    assert any(b["tenant_id"] == t for b in report["quota_breaches"])
    assert report["trials"]["started"] >= 1 and report["trials"]["expired"] >= 1
    markdown = (
        aws_clients["s3"]
        .get_object(Bucket=names.state_bucket, Key="reports/audit/2023-W09/report.md")["Body"]
        .read()
        .decode()
    )
    assert markdown.startswith("# BISMAN ERP weekly audit 2023-W09") and f"test-t{t}" in markdown
