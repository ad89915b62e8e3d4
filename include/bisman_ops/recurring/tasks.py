"""What the recurring DAGs' tasks run: connections from Airflow (hooks) at the edge, the jobs'
modules inside, a JSON-able summary back for XCom. DAG files import this lazily, inside tasks."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from bisman_ops import config, messaging
from bisman_ops.recurring import claims, db, notices, quota_alerts, trial_expiry, usage_aggregation

log = logging.getLogger(__name__)


class RecurringJobError(RuntimeError):
    """A recurring job did part of its work; the message says what is left and what to do."""


def _jsonable(obj) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(obj).items()}


def run_time(data_interval_end: datetime | None) -> datetime:
    """The moment a run works as of: its data interval's end (a manual run without a logical
    date may have none: then now)."""
    return data_interval_end or datetime.now(UTC)


def aggregate_usage(data_interval_start: datetime | None, data_interval_end: datetime | None) -> dict:
    if data_interval_start is None or data_interval_end is None:
        end = datetime.now(UTC)
        data_interval_start, data_interval_end = end - timedelta(days=1), end
    day = usage_aggregation.day_for_interval(data_interval_start, data_interval_end)
    with db.connect_app(application_name="bisman_daily_usage_aggregation") as conn:
        result = usage_aggregation.aggregate_day(conn, day)
    log.info("aggregated %s: %s", day, result)
    return _jsonable(result)


def expire_trials(as_of: datetime | None) -> dict:
    from bisman_ops.recurring import stripe_billing

    as_of = run_time(as_of)
    client = stripe_billing.client_from_connection()
    with db.connect_app(application_name="bisman_trial_expiry") as conn:
        result = trial_expiry.expire_trials(conn, client, as_of)
    log.info("trials at %s: %s", as_of, result)
    return _jsonable(result)


def mail_trial_notices() -> dict:
    with db.connect_app(application_name="bisman_trial_expiry") as conn:
        result = trial_expiry.notify(conn, notices.send_trial_notice)
    if result.failed:
        raise RecurringJobError(
            f"{result.failed} trial mail(s) not sent and left for the next run; first: "
            f"{'; '.join(result.failures[:3])}")
    return _jsonable(result)


def send_quota_alerts(as_of: datetime | None, run_id: str, thresholds, *,
                      previous: datetime | None = None) -> dict:
    """``previous``: when the previous successful run evaluated (the periods ended since are
    evaluated too)."""
    as_of = run_time(as_of)
    with db.connect_app(application_name="bisman_quota_alerts") as conn:
        result = quota_alerts.send_alerts(conn, as_of, notices.send_quota_alert, run_id=run_id,
                                          thresholds=thresholds, previous=previous)
    log.info("quota alerts: %s", result)
    if result.failed:
        raise RecurringJobError(
            f"{result.failed} of {result.candidates} quota alert mail(s) failed and stay unrecorded, so the "
            f"next run retries them ({result.sent} sent); first: {'; '.join(result.failures[:3])}")
    return _jsonable(result)


def send_quota_team_summary(run_id: str, since: datetime) -> dict:
    with db.connect_app(application_name="bisman_quota_alerts") as conn:
        alerts = quota_alerts.alerts_of_run(conn, run_id, since)
        if not alerts:
            return {"alerts": 0, "email": False, "slack": False}
        subject, body = notices.quota_team_summary(run_id, alerts)
        payload = {"run_id": run_id, "alerts": len(alerts)}
        email = claims.claim_once(conn, quota_alerts.SUMMARY_EVENT_TYPE,
                                  f"quota.alert_summary:email:{run_id}", payload,
                                  lambda: messaging.send_email(messaging.team_recipients(), subject, body))
        slack = claims.claim_once(conn, quota_alerts.SUMMARY_EVENT_TYPE,
                                  f"quota.alert_summary:slack:{run_id}", payload,
                                  lambda: messaging.send_slack(f"*{subject}*\n{body}"))
    return {"alerts": len(alerts), "email": email, "slack": slack}


def run_weekly_audit(run_at: datetime | None) -> dict:
    from bisman_ops.clients import aws as aws_client
    from bisman_ops.recurring import stripe_billing, weekly_audit

    names = config.deployment()  # the deployment's own configuration, never a form default
    aws = {s: aws_client.client(s)
           for s in ("rds", "ec2", "wafv2", "elbv2", "secretsmanager", "acm", "s3")}

    def announce(report, uris) -> None:
        s = report.summary()
        summary = "\n".join(f"- {k.replace('_', ' ')}: {v}" for k, v in s.items() if k != "week")
        body = messaging.render("weekly_audit_email.txt", week=report.week, week_start=report.week_start,
                                week_end=report.week_end, summary=summary, report_uri=uris["report.md"],
                                json_uri=uris["report.json"])
        messaging.send_email(messaging.team_recipients(),
                             f"[bisman-ops] weekly audit {report.week}: {s['security_findings']} security, "
                             f"{s['stripe_mismatches']} billing finding(s)", body)

    with db.connect_app(application_name="bisman_weekly_audit") as conn:
        result = weekly_audit.run_audit(conn, stripe_billing.client_from_connection(), aws,
                                        bucket=names.state_bucket, alb_name=names.alb_name,
                                        run_at=run_time(run_at), announce=announce)
    return _jsonable(result)


def summary_since(dag_run_start: datetime | None, data_interval_end: datetime | None) -> datetime:
    """Where a run's recorded alerts begin: a margin before the run started."""
    start = dag_run_start or datetime.now(UTC)
    return min(start, run_time(data_interval_end)) - timedelta(hours=1)
