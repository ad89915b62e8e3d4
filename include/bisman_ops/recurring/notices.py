"""The recurring jobs' messages: rendered from ``include/templates/`` and sent through
``bisman_ops.messaging`` (Airflow's SMTP and Slack connections)."""

from __future__ import annotations

from collections import Counter

from bisman_ops import messaging
from bisman_ops.recurring.quota_alerts import QuotaAlert

TEAM_SUMMARY_LINES = 50


def quota_alert_mail(alert: QuotaAlert) -> tuple[str, str]:
    """Subject and text of the mail a tenant gets for one alert."""
    period_label = "daily" if alert.period == "day" else "monthly"
    percent_text = f"{alert.percent:g}%" if alert.percent is not None else "more than all"
    reached = "reached" if alert.threshold >= 100 else "passed"
    advice = ("New usage may be limited until the period ends. Upgrade your plan to raise the limit."
              if alert.threshold >= 100 else
              "Nothing is limited yet. Consider upgrading your plan before you reach the limit.")
    subject = f"BISMAN ERP: {alert.threshold}% of your {period_label} {alert.metric} quota {reached}"
    body = messaging.render(
        "quota_alert_tenant.txt", name=alert.name, slug=alert.slug, percent_text=percent_text,
        period_label=period_label, metric=alert.metric, used=f"{alert.used:,}", quota=f"{alert.quota:,}",
        period_start=alert.period_start.isoformat(), advice=advice)
    return subject, body


def send_quota_alert(alert: QuotaAlert) -> None:
    subject, body = quota_alert_mail(alert)
    messaging.send_email([alert.billing_email], subject, body)


def quota_team_summary(run_id: str, alerts: list[dict]) -> tuple[str, str]:
    """Subject and text of the team's summary of one run's alerts (payload dicts)."""
    thresholds = Counter(a["threshold"] for a in alerts)
    by_threshold = ", ".join(f"{count} at {t}%" for t, count in sorted(thresholds.items(), reverse=True))
    ordered = sorted(alerts, key=lambda a: (-a["threshold"], a["slug"], a["metric"], a["period"]))
    lines = "\n".join(
        f"- {a['slug']} (tenant {a['tenant_id']}): {a['metric']} {a['period']} "
        f"{a['used']:,} of {a['quota']:,}"
        f" ({a['threshold']}%){'' if a.get('emailed_to') else ', no billing email'}"
        for a in ordered[:TEAM_SUMMARY_LINES])
    more = (f"... and {len(alerts) - TEAM_SUMMARY_LINES} more (events of type quota.alert, "
            f"payload.run_id = {run_id})" if len(alerts) > TEAM_SUMMARY_LINES else "")
    subject = f"[bisman-ops] quota alerts: {len(alerts)} ({by_threshold})"
    body = messaging.render("quota_alert_team.txt", run_id=run_id, count=len(alerts),
                            tenant_count=len({a["tenant_id"] for a in alerts}), by_threshold=by_threshold,
                            lines=lines, more=more)
    return subject, body


def trial_mail(notice: dict) -> tuple[str, str]:
    """Subject and text of the mail for a trial.expired / trial.converted event row."""
    payload = notice["payload"]
    values = {"name": notice["name"], "slug": notice["slug"],
              "trial_ends_at": payload["trial_ends_at"][:10], "plan": payload["plan"],
              "previous_plan": payload["previous_plan"]}
    if notice["type"] == "trial.converted":
        return (f"BISMAN ERP: welcome to the {payload['plan']} plan",
                messaging.render("trial_converted.txt", **values))
    return "BISMAN ERP: your trial has ended", messaging.render("trial_expired.txt", **values)


def send_trial_notice(notice: dict) -> None:
    subject, body = trial_mail(notice)
    messaging.send_email([notice["billing_email"]], subject, body)
