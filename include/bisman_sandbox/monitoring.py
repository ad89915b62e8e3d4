"""Prometheus and Alertmanager, wired to the sandbox's mail and Slack sinks.

Prometheus scrapes the sandbox application (job ``bisman-app``), itself and Alertmanager, and
loads alert rules from ``rules_dir(ctx)``: the rollout delivers its rule files there and calls
``reload_prometheus``. Rule files are delivered state, not configuration, so ``up`` keeps them.
Alertmanager routes every alert to the team by email (SMTP sink: STARTTLS verified against the
sink's CA, then AUTH) and Slack (sink).
Intervals are seconds rather than minutes so an alert reaches both sinks within ~15 s.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests
import yaml

from bisman_ops import config
from bisman_sandbox import sinks
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    start_process,
    stop_process,
    wait_until,
)

PROMETHEUS_BIN = "/usr/bin/prometheus"
ALERTMANAGER_BIN = "/usr/bin/prometheus-alertmanager"
PROMTOOL_BIN = "/usr/bin/promtool"
PROMETHEUS = "prometheus"
ALERTMANAGER = "alertmanager"
APP_JOB = "bisman-app"
SLACK_CHANNEL = "#bisman-alerts"
EMAIL_TEXT = (
    "{{ range .Alerts }}[{{ .Status }}] {{ .Labels.alertname }} ({{ .Labels.severity }}): "
    "{{ .Annotations.summary }}\n{{ .Annotations.description }}\n\n{{ end }}"
)
HTTP_TIMEOUT = 10.0
START_TIMEOUT = 30.0


def up(ctx: SandboxContext) -> dict[str, str]:
    rules_dir(ctx)
    if not is_running(ctx, ALERTMANAGER):
        conf = ctx.path("alertmanager", "alertmanager.yml")
        conf.write_text(yaml.safe_dump(alertmanager_config(ctx), sort_keys=False))
        start_process(ctx, ALERTMANAGER, [
            ALERTMANAGER_BIN,
            f"--config.file={conf}",
            f"--storage.path={_dir(ctx, 'alertmanager', 'data')}",
            f"--web.listen-address={HOST}:{ctx.port('alertmanager')}",
            # Empty disables clustering, which would otherwise bind 0.0.0.0:9094.
            "--cluster.listen-address=",
            f"--web.external-url={ctx.url('alertmanager')}",
        ])
    _wait_ready(ctx, ALERTMANAGER, ctx.url("alertmanager"))
    if not is_running(ctx, PROMETHEUS):
        conf = ctx.path("prometheus", "prometheus.yml")
        conf.write_text(yaml.safe_dump(prometheus_config(ctx), sort_keys=False))
        start_process(ctx, PROMETHEUS, [
            PROMETHEUS_BIN,
            f"--config.file={conf}",
            f"--storage.tsdb.path={_dir(ctx, 'prometheus', 'data')}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={HOST}:{ctx.port('prometheus')}",
            "--web.enable-lifecycle",
            f"--web.external-url={ctx.url('prometheus')}",
            # The default resend delay holds a new alert back for a minute.
            "--rules.alert.resend-delay=1s",
        ])
    _wait_ready(ctx, PROMETHEUS, ctx.url("prometheus"))
    return {
        "prometheus": f"{ctx.url('prometheus')} (rules: {rules_dir(ctx)})",
        "alertmanager": ctx.url("alertmanager"),
    }


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, PROMETHEUS)
    stop_process(ctx, ALERTMANAGER)


def healthy(ctx: SandboxContext) -> bool:
    return all(_ready(ctx, name, ctx.url(port)) for name, port in (
        (PROMETHEUS, "prometheus"), (ALERTMANAGER, "alertmanager")))


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {
        config.PROMETHEUS_CONN_ID: {
            "conn_type": "http", "host": f"http://{HOST}", "port": ctx.port("prometheus")},
        config.ALERTMANAGER_CONN_ID: {
            "conn_type": "http", "host": f"http://{HOST}", "port": ctx.port("alertmanager")},
    }


def rules_dir(ctx: SandboxContext) -> Path:
    """Where Prometheus reads alert rule files (``*.yml``/``*.yaml``) from."""
    return _dir(ctx, "prometheus", "rules")


def reload_prometheus(ctx: SandboxContext) -> None:
    """Make Prometheus re-read its config and rule files; on a bad file it keeps the old rules."""
    url = f"{ctx.url('prometheus')}/-/reload"
    try:
        resp = requests.post(url, timeout=HTTP_TIMEOUT)
    except requests.RequestException as exc:
        raise SandboxError(f"Prometheus reload at {url} failed: {exc}") from exc
    if resp.status_code != 200:
        # Prometheus' answer does not name the bad file; promtool does.
        raise SandboxError(
            f"Prometheus reload at {url} refused (HTTP {resp.status_code}): {resp.text.strip()[:1000]}; "
            f"the previous rules stay loaded. promtool on {rules_dir(ctx)}: {_promtool_findings(ctx)}"
        )


def _promtool_findings(ctx: SandboxContext) -> str:
    files = sorted(str(p) for p in rules_dir(ctx).iterdir() if p.suffix in (".yml", ".yaml"))
    if not files:
        return "no rule files"
    try:
        done = subprocess.run([PROMTOOL_BIN, "check", "rules", *files], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not run promtool ({exc})"
    failed = [line.strip() for line in done.stderr.splitlines() if line.strip() and line.strip() != "FAILED:"]
    return "; ".join(failed)[:2000] or "no errors found (the main config may be the problem)"


def rule_groups(ctx: SandboxContext) -> list[dict]:
    """The rule groups Prometheus has loaded (``/api/v1/rules``)."""
    resp = requests.get(f"{ctx.url('prometheus')}/api/v1/rules", timeout=HTTP_TIMEOUT)
    resp.raise_for_status()
    return resp.json()["data"]["groups"]


def prometheus_config(ctx: SandboxContext) -> dict:
    rules = rules_dir(ctx)

    def job(name: str, port: str) -> dict:
        return {"job_name": name, "static_configs": [{"targets": [f"{HOST}:{ctx.port(port)}"]}]}

    return {
        "global": {"scrape_interval": "5s", "scrape_timeout": "4s", "evaluation_interval": "5s",
                   "external_labels": {"environment": "sandbox"}},
        "alerting": {"alertmanagers": [
            {"static_configs": [{"targets": [f"{HOST}:{ctx.port('alertmanager')}"]}]}]},
        "rule_files": [str(rules / "*.yml"), str(rules / "*.yaml")],
        "scrape_configs": [
            {**job(APP_JOB, "app"), "metrics_path": "/metrics"},
            job("prometheus", "prometheus"),
            job("alertmanager", "alertmanager"),
        ],
    }


def alertmanager_config(ctx: SandboxContext) -> dict:
    team_email = os.environ.get(config.TEAM_EMAIL_ENV, config.DEFAULT_TEAM_EMAIL)
    mail_from = os.environ.get(config.MAIL_FROM_ENV, config.DEFAULT_MAIL_FROM)
    return {
        "global": {
            "resolve_timeout": "1m",
            "smtp_smarthost": f"{HOST}:{ctx.port('smtp')}",
            "smtp_from": mail_from,
            "smtp_auth_username": sinks.SMTP_USER,
            "smtp_auth_password": sinks.SMTP_PASSWORD,
            # STARTTLS before AUTH, the sink's certificate checked against its CA (host 127.0.0.1).
            "smtp_require_tls": True,
        },
        "route": {
            "receiver": "team",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "5s",
            "repeat_interval": "1h",
            # The canary (Watchdog) is re-sent often, so a check can see a fresh delivery of it.
            "routes": [{"receiver": "team", "matchers": ['alertname="Watchdog"'], "repeat_interval": "20s"}],
        },
        "receivers": [{
            "name": "team",
            # A text part beside Alertmanager's HTML one, so mail readers and tests get plain lines.
            "email_configs": [{"to": team_email, "send_resolved": True, "text": EMAIL_TEXT,
                               "tls_config": {"ca_file": str(sinks.ca_file(ctx)),
                                              "insecure_skip_verify": False}}],
            "slack_configs": [{
                "api_url": sinks.webhook_url(ctx, "T0SANDBOX/B0ALERTS/alertmanager"),
                "channel": SLACK_CHANNEL,
                "send_resolved": True,
            }],
        }],
    }


def _dir(ctx: SandboxContext, *parts: str) -> Path:
    d = ctx.path(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _ready(ctx: SandboxContext, name: str, base_url: str) -> bool:
    if not is_running(ctx, name):
        return False
    try:
        return requests.get(f"{base_url}/-/ready", timeout=HTTP_TIMEOUT).status_code == 200
    except requests.RequestException:
        return False


def _wait_ready(ctx: SandboxContext, name: str, base_url: str) -> None:
    # Stop waiting as soon as the process is gone (a bad config or rule file), and show why.
    wait_until(lambda: not is_running(ctx, name) or _ready(ctx, name, base_url),
               timeout=START_TIMEOUT, what=f"{name} at {base_url}/-/ready")
    if not is_running(ctx, name):
        raise SandboxError(f"{name} exited during start; last lines of "
                           f"{ctx.log_dir / (name + '.log')}:\n{_log_tail(ctx, name)}")


def _log_tail(ctx: SandboxContext, name: str, lines: int = 15) -> str:
    try:
        return "\n".join((ctx.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
