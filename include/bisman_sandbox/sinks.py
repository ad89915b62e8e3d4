"""Mail and Slack sinks: where the sandbox's alerts, reports and notifications land.

One background process (``sink_server``) serves a real SMTP server that requires STARTTLS (a
certificate of a sandbox CA of its own, trusted through ``ca_file``) and then AUTH with
``SMTP_USER``/``SMTP_PASSWORD``, and a Slack incoming-webhook look-alike. Tests and the e2e
checks read what arrived with ``captured_mail``/``captured_slack`` (or wait for it with
``wait_for_mail``/``wait_for_slack``) and reset with ``clear``.
"""

from __future__ import annotations

import os
import smtplib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bisman_ops import config
from bisman_sandbox import local_ca
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    start_process,
    stop_process,
    wait_until,
)

SMTP_USER = "bisman-sandbox"
SMTP_PASSWORD = "sandbox-smtp-password-not-secret"
# The part of a Slack webhook URL after /services/; the sink accepts any, the connections use this.
SLACK_WEBHOOK_TOKEN = "T0SANDBOX/B0SANDBOX/sandbox-webhook-token-not-secret"

PROCESS = "sinks"
HTTP_TIMEOUT = 5.0
INCLUDE_DIR = Path(__file__).resolve().parents[1]


def cert_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "smtp-tls"


def ca_file(ctx: SandboxContext) -> Path:
    """The root that signs the SMTP sink's certificate: what its clients verify it with."""
    return cert_dir(ctx) / "root.pem"


def up(ctx: SandboxContext) -> dict[str, str]:
    local_ca.ensure(cert_dir(ctx), ("localhost", HOST))
    if not is_running(ctx, PROCESS):
        start_process(
            ctx,
            PROCESS,
            [
                sys.executable, "-m", "bisman_sandbox.sink_server",
                "--smtp-port", str(ctx.port("smtp")),
                "--http-port", str(ctx.port("slack")),
                "--state-dir", str(state_dir(ctx)),
                "--cert-dir", str(cert_dir(ctx)),
            ],
            env={"PYTHONPATH": _pythonpath()},
        )
    wait_until(lambda: healthy(ctx), timeout=20.0, what=f"mail/Slack sink ({PROCESS})")
    return {
        "smtp sink": f"{HOST}:{ctx.port('smtp')} (STARTTLS, CA {ca_file(ctx)}; AUTH {SMTP_USER})",
        "slack sink": f"{webhook_url(ctx)} (captures: {ctx.url('slack')}/_sink/mail, /_sink/slack)",
    }


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, PROCESS)


def healthy(ctx: SandboxContext) -> bool:
    if not is_running(ctx, PROCESS):
        return False
    try:
        resp = requests.get(f"{ctx.url('slack')}/_sink/health", timeout=HTTP_TIMEOUT)
        if resp.status_code != 200:
            return False
        with smtplib.SMTP(HOST, ctx.port("smtp"), timeout=HTTP_TIMEOUT) as smtp:
            return smtp.noop()[0] == 250
    except (OSError, requests.RequestException, smtplib.SMTPException):
        return False


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {
        config.SMTP_CONN_ID: {
            "conn_type": "smtp",
            "host": HOST,
            "port": ctx.port("smtp"),
            "login": SMTP_USER,
            "password": SMTP_PASSWORD,
            # SmtpHook: disable_ssl -> smtplib.SMTP, then STARTTLS; ca_file: the sink's own CA, which
            # bisman_ops' SMTP logins verify the certificate with (bisman_ops.clients.smtp_tls).
            "extra": {
                "disable_ssl": True,
                "disable_tls": False,
                "ca_file": str(ca_file(ctx)),
                "from_email": config.DEFAULT_MAIL_FROM,
                "timeout": 10,
                "retry_limit": 1,
            },
        },
        config.SLACK_CONN_ID: {
            "conn_type": "slackwebhook",
            # SlackWebhookHook builds the URL as host + "/" + password when host has a scheme.
            "host": f"{ctx.url('slack')}/services",
            "password": SLACK_WEBHOOK_TOKEN,
            "extra": {"timeout": 10},
        },
    }


def state_dir(ctx: SandboxContext) -> Path:
    d = ctx.path("sinks", "captures")
    d.mkdir(parents=True, exist_ok=True)
    return d


def webhook_url(ctx: SandboxContext, token: str = SLACK_WEBHOOK_TOKEN) -> str:
    """A Slack incoming-webhook URL that lands in the sink."""
    return f"{ctx.url('slack')}/services/{token}"


def captured_mail(ctx: SandboxContext) -> list[dict]:
    """Every mail received: from, to, subject, text, html, auth_login, received_at (oldest first)."""
    return _get(ctx, "mail")


def captured_slack(ctx: SandboxContext) -> list[dict]:
    """Every Slack post received: path, payload, received_at (oldest first)."""
    return _get(ctx, "slack")


def clear(ctx: SandboxContext) -> None:
    for kind in ("mail", "slack"):
        resp = requests.delete(f"{ctx.url('slack')}/_sink/{kind}", timeout=HTTP_TIMEOUT)
        if resp.status_code != 204:
            raise SandboxError(f"clearing the {kind} sink: HTTP {resp.status_code} {resp.text[:200]}")


def wait_for_mail(
    ctx: SandboxContext, match: Callable[[dict], bool] = lambda m: True, *, timeout: float = 30.0
) -> dict:
    """The first captured mail for which ``match`` is true, waiting up to ``timeout`` s for it."""
    return _wait_for(ctx, "mail", match, timeout)


def wait_for_slack(
    ctx: SandboxContext, match: Callable[[dict], bool] = lambda p: True, *, timeout: float = 30.0
) -> dict:
    """The first captured Slack post for which ``match`` is true, waiting up to ``timeout`` s."""
    return _wait_for(ctx, "slack", match, timeout)


def _wait_for(ctx: SandboxContext, kind: str, match: Callable[[dict], bool], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        captures = _get(ctx, kind)
        for item in captures:
            if match(item):
                return item
        if time.monotonic() >= deadline:
            raise SandboxError(
                f"no matching {kind} in the sink after {timeout:.0f} s ({len(captures)} captured); "
                f"see {ctx.url('slack')}/_sink/{kind}"
            )
        time.sleep(0.5)


def _get(ctx: SandboxContext, kind: str) -> list[dict]:
    resp = requests.get(f"{ctx.url('slack')}/_sink/{kind}", timeout=HTTP_TIMEOUT)
    if resp.status_code != 200:
        raise SandboxError(f"reading the {kind} sink: HTTP {resp.status_code} {resp.text[:200]}")
    return resp.json()


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{INCLUDE_DIR}{os.pathsep}{existing}" if existing else str(INCLUDE_DIR)
