"""The SMTP and Slack sinks, against the real sink process and the Airflow providers' hooks."""

from __future__ import annotations

import json
import smtplib
import ssl
import uuid
from email.message import EmailMessage

import pytest
import requests

from bisman_ops import config
from bisman_sandbox import sinks
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import pid_alive, port_open, read_pid

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    sinks.up(c)
    return c


@pytest.fixture
def airflow_connections(ctx, monkeypatch):
    """The sink connections as Airflow sees them from AIRFLOW_CONN_* variables."""
    for conn_id, conn in sinks.connections(ctx).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def mail(subject: str, body: str = "sandbox body") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = config.DEFAULT_MAIL_FROM
    msg["To"] = "ops@bisman.example"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def plain(ctx) -> smtplib.SMTP:
    return smtplib.SMTP(HOST, ctx.port("smtp"), timeout=10)


def smtp(ctx) -> smtplib.SMTP:
    """A client after STARTTLS, the sink's certificate verified with the sink's CA."""
    client = plain(ctx)
    client.starttls(context=ssl.create_default_context(cafile=sinks.ca_file(ctx)))
    return client


def subjects(ctx) -> list[str]:
    return [m["subject"] for m in sinks.captured_mail(ctx)]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_mail_sent_after_auth_is_captured_with_sender_recipients_subject_and_body(ctx, mechanism):
    subject = f"auth {mechanism} {uuid.uuid4().hex}"
    with smtp(ctx) as s:
        s.ehlo()
        s.user, s.password = sinks.SMTP_USER, sinks.SMTP_PASSWORD
        s.auth(mechanism, getattr(s, f"auth_{mechanism.lower()}"), initial_response_ok=False)
        s.send_message(mail(subject, "line one\nline two"),
                       to_addrs=["ops@bisman.example", "cc@bisman.example"])

    got = sinks.wait_for_mail(ctx, lambda m: m["subject"] == subject, timeout=5)
    assert got["from"] == config.DEFAULT_MAIL_FROM
    assert got["to"] == ["ops@bisman.example", "cc@bisman.example"]
    assert got["text"].strip() == "line one\nline two"
    assert got["auth_login"] == sinks.SMTP_USER
    assert got["tls"] is True
    assert got["received_at"]


def test_nothing_but_starttls_is_accepted_before_tls_so_no_password_crosses_in_clear(ctx):
    with plain(ctx) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")  # AUTH is offered only over TLS
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.login(sinks.SMTP_USER, sinks.SMTP_PASSWORD)  # smtplib stops: nothing was sent
        assert s.docmd("AUTH", "PLAIN")[0] == 530
        assert s.mail(config.DEFAULT_MAIL_FROM)[0] == 530


def test_wrong_password_is_refused(ctx):
    with smtp(ctx) as s, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        s.login(sinks.SMTP_USER, "not-the-password")
    assert refused.value.smtp_code == 535


def test_mail_without_auth_is_refused_and_not_captured(ctx):
    subject = f"anonymous {uuid.uuid4().hex}"
    with smtp(ctx) as s, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        s.send_message(mail(subject))
    assert refused.value.smtp_code == 530
    assert subject not in subjects(ctx)


def test_messaging_logs_in_over_verified_starttls_and_sends_through_the_sandbox_connection(
        ctx, airflow_connections):
    from bisman_ops import messaging

    subject = f"smtp hook {uuid.uuid4().hex}"
    messaging.send_email(["team@bisman.example"], subject, "quota 80%", "<p>quota <b>80%</b></p>")

    got = sinks.wait_for_mail(ctx, lambda m: m["subject"] == subject, timeout=5)
    assert got["from"] == config.DEFAULT_MAIL_FROM
    assert got["to"] == ["team@bisman.example"]
    assert got["text"] == "quota 80%"
    assert (got["auth_login"], got["tls"]) == (sinks.SMTP_USER, True)


def test_the_providers_hook_alone_cannot_verify_the_sinks_certificate(ctx, airflow_connections):
    """Why messaging wraps SmtpHook: the provider's context knows only the system trust store."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with pytest.raises(ssl.SSLCertVerificationError), SmtpHook(smtp_conn_id=config.SMTP_CONN_ID):
        pass


def test_messaging_fails_with_a_wrong_password_without_echoing_it(ctx, monkeypatch):
    from bisman_ops import messaging

    conn = {**sinks.connections(ctx)[config.SMTP_CONN_ID], "password": "wrong-password-4711"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{config.SMTP_CONN_ID.upper()}", json.dumps(conn))
    with pytest.raises(messaging.MessagingError, match="SMTPAuthenticationError") as failed:
        messaging.send_email(["team@bisman.example"], "wrong password", "x")
    assert "wrong-password-4711" not in str(failed.value)


def auth_attempts(ctx, user: str) -> int:
    """How many AUTH commands for ``user`` reached the sink (it logs each, never the password)."""
    return (ctx.log_dir / f"{sinks.PROCESS}.log").read_text().count(f"for {user.encode()!r}")


@pytest.mark.parametrize(("extra", "error"), [
    ({"ca_file": "HTTPS listener's root"}, r"SSLCertVerificationError: .*certificate verify failed"),
    ({"ssl_context": "none"}, r"sets ssl_context: none \(no certificate check\)"),
    ({"disable_tls": True}, r"disables both SSL \(disable_ssl\) and STARTTLS \(disable_tls\)"),
], ids=["another CA", "ssl_context none", "no TLS at all"])
def test_messaging_refuses_a_server_it_cannot_verify_before_the_password_is_sent(ctx, monkeypatch, extra,
                                                                                 error):
    """issue 23 point 7: mail goes out only over TLS whose certificate checked out."""
    from bisman_ops import messaging
    from bisman_sandbox import tls_listener

    if extra.get("ca_file"):
        extra = {"ca_file": str(tls_listener.cert_dir(ctx) / "root.pem")}
    user = f"probe-{uuid.uuid4().hex[:8]}"
    conn = sinks.connections(ctx)[config.SMTP_CONN_ID]
    conn = {**conn, "login": user, "password": "never-sent-password", "extra": {**conn["extra"], **extra}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{config.SMTP_CONN_ID.upper()}", json.dumps(conn))
    with pytest.raises(messaging.MessagingError, match=error) as failed:
        messaging.send_email(["team@bisman.example"], f"refused {user}", "x")
    assert "never-sent-password" not in str(failed.value)
    assert auth_attempts(ctx, user) == 0


def test_slack_webhook_hook_post_is_captured_with_its_path(ctx, airflow_connections):
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    text = f"deploy finished {uuid.uuid4().hex}"
    resp = SlackWebhookHook(slack_webhook_conn_id=config.SLACK_CONN_ID).send_text(text)

    assert (resp.status_code, resp.body) == (200, "ok")
    got = sinks.wait_for_slack(ctx, lambda p: p["payload"].get("text") == text, timeout=5)
    assert got["path"] == f"/services/{sinks.SLACK_WEBHOOK_TOKEN}"


def test_slack_sink_rejects_what_slack_rejects(ctx):
    url = sinks.webhook_url(ctx)
    before = len(sinks.captured_slack(ctx))
    no_text = requests.post(url, json={"channel": "#x"}, timeout=5)
    not_json = requests.post(url, data=b"{oops", headers={"Content-Type": "application/json"}, timeout=5)
    wrong_path = requests.post(f"{ctx.url('slack')}/elsewhere", json={"text": "x"}, timeout=5)

    assert (no_text.status_code, no_text.text) == (400, "no_text")
    assert (not_json.status_code, not_json.text) == (400, "invalid_payload")
    assert wrong_path.status_code == 404
    assert len(sinks.captured_slack(ctx)) == before


def test_slack_sink_accepts_the_form_encoded_payload_variant(ctx):
    text = f"form {uuid.uuid4().hex}"
    resp = requests.post(sinks.webhook_url(ctx), data={"payload": json.dumps({"text": text})}, timeout=5)
    assert (resp.status_code, resp.text) == (200, "ok")
    sinks.wait_for_slack(ctx, lambda p: p["payload"].get("text") == text, timeout=5)


def test_captures_survive_a_sink_restart(ctx):
    subject = f"persisted {uuid.uuid4().hex}"
    with smtp(ctx) as s:
        s.login(sinks.SMTP_USER, sinks.SMTP_PASSWORD)
        s.send_message(mail(subject))
    requests.post(sinks.webhook_url(ctx), json={"text": subject}, timeout=5).raise_for_status()

    sinks.down(ctx)
    sinks.up(ctx)

    assert subject in subjects(ctx)
    assert any(p["payload"].get("text") == subject for p in sinks.captured_slack(ctx))


def test_clear_empties_both_captures(ctx):
    marker = f"to be cleared {uuid.uuid4().hex}"
    with smtp(ctx) as s:
        s.login(sinks.SMTP_USER, sinks.SMTP_PASSWORD)
        s.send_message(mail(marker))
    requests.post(sinks.webhook_url(ctx), json={"text": marker}, timeout=5).raise_for_status()
    assert marker in subjects(ctx)
    sinks.clear(ctx)
    # Alertmanager may deliver a new alert (the always-firing canary) right after the clear: only
    # what came before it must be gone.
    assert marker not in subjects(ctx)
    assert not [p for p in sinks.captured_slack(ctx) if p["payload"].get("text") == marker]


def test_up_twice_keeps_the_same_process(ctx):
    pid = read_pid(ctx, sinks.PROCESS)
    sinks.up(ctx)
    assert read_pid(ctx, sinks.PROCESS) == pid


def test_down_leaves_no_process_or_port_open(ctx):
    pid = read_pid(ctx, sinks.PROCESS)
    sinks.down(ctx)
    try:
        assert not pid_alive(pid)
        assert not port_open(ctx.port("smtp"))
        assert not port_open(ctx.port("slack"))
        assert not sinks.healthy(ctx)
    finally:
        sinks.up(ctx)
    assert sinks.healthy(ctx)


def test_sink_log_holds_neither_the_smtp_password_nor_the_webhook_token(ctx, airflow_connections):
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    with smtp(ctx) as s:
        s.login(sinks.SMTP_USER, sinks.SMTP_PASSWORD)
    SlackWebhookHook(slack_webhook_conn_id=config.SLACK_CONN_ID).send_text("log check")

    log = (ctx.log_dir / f"{sinks.PROCESS}.log").read_text()
    assert "POST /services/T0SANDBOX/B0SANDBOX/***" in log
    assert sinks.SMTP_PASSWORD not in log
    assert sinks.SLACK_WEBHOOK_TOKEN.rsplit("/", 1)[1] not in log
