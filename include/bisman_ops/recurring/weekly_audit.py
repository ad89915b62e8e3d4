"""Weekly audit of the previous ISO week: usage, quota breaches, trials, payment failures, Stripe
reconciliation and AWS security posture, as one ``AuditReport``.

Findings are data: a public database or an unrotated secret is a line in the report, not an
exception. Only a source that cannot be read (database, Stripe, AWS) stops the audit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import psycopg

from bisman_ops.recurring import db, stripe_billing

SENSITIVE_PORTS = (5432, 6379, 6432)
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
SECRET_ROTATION_DAYS = 90
CERT_EXPIRY_DAYS = 30
TOP_TENANTS = 25
EVENT_TYPE = "audit.completed"
# A tenant's status as Stripe would show it; past_due covers Stripe's unpaid.
STATUS_MATCHES = {"trialing": {"trialing"}, "active": {"active"}, "past_due": {"past_due", "unpaid"},
                  "canceled": {"canceled", "missing", "incomplete_expired"}}


@dataclass(frozen=True)
class AuditWeek:
    year: int
    week: int
    start: date  # Monday
    end: date  # Sunday

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def from_ts(self) -> datetime:
        return datetime.combine(self.start, time(0), tzinfo=UTC)

    @property
    def to_ts(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=UTC)


def previous_iso_week(run_at: datetime) -> AuditWeek:
    """The ISO week before the one ``run_at`` falls in (Monday to Sunday, UTC). The Sunday 00:00
    run falls in the last minute-zero of its own week, which has not ended: it audits the week
    before, as does any run during the week."""
    day = run_at.astimezone(UTC).date() - timedelta(days=7)
    year, week, weekday = day.isocalendar()
    start = day - timedelta(days=weekday - 1)
    return AuditWeek(year, week, start, start + timedelta(days=6))


@dataclass
class AuditReport:
    week: str
    week_start: str
    week_end: str
    generated_at: str
    usage: dict = field(default_factory=dict)
    quota_breaches: list[dict] = field(default_factory=list)
    quota_warnings: int = 0
    trials: dict = field(default_factory=dict)
    payment_failures: list[dict] = field(default_factory=list)
    stripe_mismatches: list[dict] = field(default_factory=list)
    security_findings: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "week": self.week,
            "quota_breaches": len(self.quota_breaches),
            "quota_warnings": self.quota_warnings,
            "trials_started": self.trials.get("started", 0),
            "trials_converted": self.trials.get("converted", 0),
            "trials_expired": self.trials.get("expired", 0),
            "payment_failures": len(self.payment_failures),
            "stripe_mismatches": len(self.stripe_mismatches),
            "security_findings": len(self.security_findings),
        }

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "summary": self.summary()}, indent=2, default=str)


def collect_database(conn: psycopg.Connection, week: AuditWeek, report: AuditReport) -> list[dict]:
    """Usage, breaches, trials and payment failures of the week; returns the billed tenants."""
    params = {"week_start": week.start, "week_end": week.end, "from_ts": week.from_ts, "to_ts": week.to_ts,
              "top": TOP_TENANTS}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        db.set_statement_timeout(cur)
        cur.execute(db.sql("audit_usage_totals"), params)
        totals = {r["metric"]: {"total": r["total"], "tenants": r["tenants"]} for r in cur.fetchall()}
        cur.execute(db.sql("audit_usage_top_tenants"), params)
        for r in cur.fetchall():
            totals.setdefault(r["metric"], {"total": 0, "tenants": 0}).setdefault("top_tenants", []).append(
                {"tenant_id": r["tenant_id"], "slug": r["slug"], "quantity": r["quantity"]})
        report.usage = totals
        types = ["quota.alert", "trial.expired", "trial.converted", "stripe.invoice.payment_failed"]
        cur.execute(db.sql("audit_events_of_week"), {**params, "types": types})
        counts = {"trial.expired": 0, "trial.converted": 0}
        for e in cur:
            if e["type"] == "quota.alert":
                if int(e["payload"].get("threshold", 0)) >= 100:
                    report.quota_breaches.append({"tenant_id": e["tenant_id"], "slug": e["slug"],
                                                  **{k: e["payload"].get(k) for k in
                                                     ("metric", "period", "period_start", "used", "quota")}})
                else:
                    report.quota_warnings += 1
            elif e["type"] == "stripe.invoice.payment_failed":
                obj = (e["payload"].get("data") or {}).get("object") or {}
                report.payment_failures.append({
                    "tenant_id": e["tenant_id"], "slug": e["slug"],
                    "occurred_at": e["occurred_at"].isoformat(),
                    "invoice": obj.get("id"), "amount_due": obj.get("amount_due")})
            else:
                counts[e["type"]] += 1
        cur.execute(db.sql("audit_trials_started"), params)
        report.trials = {"started": cur.fetchone()["started"], "converted": counts["trial.converted"],
                         "expired": counts["trial.expired"]}
        cur.execute(db.sql("audit_billed_tenants"))
        return cur.fetchall()


def reconcile_stripe(stripe_client, billed: list[dict]) -> list[dict]:
    """Tenants whose plan or status disagrees with their Stripe subscription."""
    states = stripe_billing.all_subscription_states(stripe_client)
    mismatches = []
    for t in billed:
        state = states.get(t["stripe_subscription_id"],
                           stripe_billing.SubscriptionState(t["stripe_subscription_id"], "missing", None))
        downgraded_trial = t["plan"] == "free" and t["status"] == "active" and state.status in (
            "canceled", "missing", "incomplete_expired")
        if downgraded_trial:
            continue
        problems = []
        if state.status not in STATUS_MATCHES[t["status"]]:
            problems.append(f"status {t['status']} here, {state.status} in Stripe")
        if state.status not in ("canceled", "missing", "incomplete_expired") and state.plan != t["plan"]:
            problems.append(f"plan {t['plan']} here, {state.plan} in Stripe")
        if problems:
            mismatches.append({"tenant_id": t["tenant_id"], "slug": t["slug"],
                               "subscription": t["stripe_subscription_id"], "problems": problems})
    return mismatches


def security_findings(clients: dict[str, Any], alb_name: str, now: datetime) -> list[dict]:
    """AWS posture findings. ``clients``: boto3 clients keyed rds, ec2, wafv2, elbv2,
    secretsmanager, acm."""
    findings: list[dict] = []
    for inst in _paged(clients["rds"], "describe_db_instances", "DBInstances"):
        if inst.get("PubliclyAccessible"):
            findings.append(_finding("rds_publicly_accessible", inst["DBInstanceIdentifier"],
                                     "RDS instance is publicly accessible"))
    for sg in _paged(clients["ec2"], "describe_security_groups", "SecurityGroups"):
        for port in _open_sensitive_ports(sg):
            findings.append(_finding("security_group_open", f"{sg['GroupId']} ({sg.get('GroupName')})",
                                     f"port {port} open to the internet"))
    findings.extend(_waf_findings(clients["wafv2"], clients["elbv2"], alb_name))
    cutoff = now - timedelta(days=SECRET_ROTATION_DAYS)
    for secret in _paged(clients["secretsmanager"], "list_secrets", "SecretList"):
        last = secret.get("LastRotatedDate") or secret.get("CreatedDate")
        if last is not None and last < cutoff:
            findings.append(_finding(
                "secret_not_rotated", secret["Name"],
                f"not rotated since {last.date().isoformat()} (> {SECRET_ROTATION_DAYS} days)"))
    soon = now + timedelta(days=CERT_EXPIRY_DAYS)
    for summary in _paged(clients["acm"], "list_certificates", "CertificateSummaryList"):
        cert = clients["acm"].describe_certificate(CertificateArn=summary["CertificateArn"])["Certificate"]
        not_after = cert.get("NotAfter")
        if not_after is not None and not_after < soon:
            findings.append(_finding(
                "certificate_expiring", cert.get("DomainName", summary["CertificateArn"]),
                f"expires {not_after.date().isoformat()} (< {CERT_EXPIRY_DAYS} days)"))
    return findings


def _finding(kind: str, resource: str, detail: str) -> dict:
    return {"kind": kind, "resource": resource, "detail": detail}


def _paged(client, operation: str, key: str):
    for page in client.get_paginator(operation).paginate():
        yield from page.get(key, [])


def _open_sensitive_ports(sg: dict) -> list[int]:
    ports = []
    for perm in sg.get("IpPermissions", []):
        cidrs = [r.get("CidrIp") for r in perm.get("IpRanges", [])] + [
            r.get("CidrIpv6") for r in perm.get("Ipv6Ranges", [])]
        if not any(c in OPEN_CIDRS for c in cidrs):
            continue
        if perm.get("IpProtocol") == "-1":
            ports.extend(SENSITIVE_PORTS)
            continue
        low, high = perm.get("FromPort"), perm.get("ToPort")
        ports.extend(p for p in SENSITIVE_PORTS if low is not None and low <= p <= high)
    return sorted(set(ports))


def _waf_findings(wafv2, elbv2, alb_name: str) -> list[dict]:
    try:
        alb = elbv2.describe_load_balancers(Names=[alb_name])["LoadBalancers"][0]
    except elbv2.exceptions.LoadBalancerNotFoundException:
        return [_finding("alb_missing", alb_name, "load balancer not found; WAF association not checked")]
    acl = wafv2.get_web_acl_for_resource(ResourceArn=alb["LoadBalancerArn"]).get("WebACL")
    if not acl:
        return [_finding("waf_not_associated", alb_name, "no WAF web ACL is associated with the ALB")]
    return []


def to_markdown(report: AuditReport) -> str:
    s = report.summary()
    out = [f"# BISMAN ERP weekly audit {report.week}", "",
           f"{report.week_start} to {report.week_end}; generated {report.generated_at}.", "",
           "## Summary", ""]
    out += [f"- {k.replace('_', ' ')}: {v}" for k, v in s.items() if k != "week"]
    out += ["", "## Usage", "", "| metric | total | tenants |", "|---|---:|---:|"]
    out += [f"| {m} | {u['total']:,} | {u['tenants']:,} |" for m, u in sorted(report.usage.items())]
    out += ["", "## Quota breaches (100%)", ""]
    out += [f"- {b['slug']} (tenant {b['tenant_id']}): {b['metric']} {b['period']} from {b['period_start']}: "
            f"{b['used']} of {b['quota']}" for b in report.quota_breaches[:200]] or ["None."]
    out += ["", "## Trials", "", f"Started {report.trials.get('started', 0)}, converted "
            f"{report.trials.get('converted', 0)}, expired {report.trials.get('expired', 0)}.", "",
            "## Payment failures", ""]
    out += [f"- {p['slug']} (tenant {p['tenant_id']}): invoice {p['invoice']} at {p['occurred_at']}"
            for p in report.payment_failures[:200]] or ["None."]
    out += ["", "## Stripe reconciliation", ""]
    out += [f"- {m['slug']} (tenant {m['tenant_id']}, {m['subscription']}): {'; '.join(m['problems'])}"
            for m in report.stripe_mismatches[:200]] or ["Every billed tenant agrees with Stripe."]
    out += ["", "## Security posture", ""]
    out += [f"- **{f['kind']}** {f['resource']}: {f['detail']}" for f in report.security_findings] or [
        "No findings."]
    return "\n".join(out) + "\n"


def new_report(week: AuditWeek, now: datetime) -> AuditReport:
    return AuditReport(week=week.label, week_start=week.start.isoformat(), week_end=week.end.isoformat(),
                       generated_at=now.isoformat(timespec="seconds"))


def write_report(s3, bucket: str, report: AuditReport) -> dict[str, str]:
    """Put the JSON and Markdown reports under ``reports/audit/<week>/``; returns their S3 URIs."""
    prefix = f"reports/audit/{report.week}"
    uris = {}
    for name, body, ctype in (("report.json", report.to_json(), "application/json"),
                              ("report.md", to_markdown(report), "text/markdown; charset=utf-8")):
        key = f"{prefix}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"), ContentType=ctype)
        uris[name] = f"s3://{bucket}/{key}"
    return uris


@dataclass(frozen=True)
class AuditResult:
    week: str
    summary: dict
    report_uris: dict
    announced: bool  # audit.completed recorded and mailed by this run (False: an earlier run did)


def run_audit(conn: psycopg.Connection, stripe_client, aws: dict[str, Any], *, bucket: str, alb_name: str,
              run_at: datetime, announce) -> AuditResult:
    """Collect, write to S3, then record ``audit.completed`` and call ``announce(report, uris)``
    (the team mail) once per week: a re-run rewrites the report and announces nothing twice."""
    now = datetime.now(UTC)
    week = previous_iso_week(run_at)
    report = new_report(week, now)
    billed = collect_database(conn, week, report)
    report.stripe_mismatches = reconcile_stripe(stripe_client, billed)
    report.security_findings = security_findings(aws, alb_name, now)
    uris = write_report(aws["s3"], bucket, report)
    payload = {**report.summary(), "reports": uris}
    from bisman_ops.recurring import claims

    announced = claims.claim_once(conn, EVENT_TYPE, f"{EVENT_TYPE}:{week.label}", payload,
                                  lambda: announce(report, uris))
    return AuditResult(week=week.label, summary=report.summary(), report_uris=uris, announced=announced)
