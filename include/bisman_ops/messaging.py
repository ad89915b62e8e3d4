"""Email and Slack for every bisman-ops DAG, through Airflow's SMTP and Slack connections.

One way to notify: ``send_email`` (the smtp provider's ``SmtpHook``) and ``send_slack`` (the slack
provider's ``SlackWebhookHook``). Message bodies are readable template files under
``include/templates/``, filled with ``render``. A failed send raises ``MessagingError`` naming the
connection and what was being sent; the connection's password or webhook token never appears in it.
"""

from __future__ import annotations

import html
import os
import string
from pathlib import Path

from bisman_ops import config

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
# Used when the connection sets no timeout: a hung mail or Slack server must not hang a task.
DEFAULT_TIMEOUT_S = 30


class MessagingError(RuntimeError):
    """A notification could not be delivered."""


def render(template_name: str, **values: object) -> str:
    """``include/templates/<template_name>`` with ``$name`` placeholders filled from ``values``.

    ``string.Template`` syntax (``$$`` is a literal dollar). A placeholder with no value raises
    ``KeyError`` naming it, so a half-filled message is never sent.
    """
    path = TEMPLATES_DIR / template_name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"message template {template_name!r} not found in {TEMPLATES_DIR}") from None
    try:
        return string.Template(text).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise KeyError(f"template {template_name!r} needs a value for {exc.args[0]!r}") from None


def render_html(template_name: str, **values: object) -> str:
    """Like ``render``, with every value HTML-escaped (for ``.html`` templates)."""
    return render(template_name, **{k: html.escape(str(v)) for k, v in values.items()})


def team_recipients(environ: dict | None = None) -> list[str]:
    """The team's addresses: ``BISMAN_TEAM_EMAIL`` (comma-separated), else the default address."""
    env = os.environ if environ is None else environ
    raw = env.get(config.TEAM_EMAIL_ENV, "") or config.DEFAULT_TEAM_EMAIL
    return [addr.strip() for addr in raw.split(",") if addr.strip()]


def mail_from(environ: dict | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(config.MAIL_FROM_ENV, "").strip() or config.DEFAULT_MAIL_FROM


def send_email(
    to: list[str],
    subject: str,
    body_text: str,
    body_html: str | None = None,
    *,
    conn_id: str = config.SMTP_CONN_ID,
) -> None:
    """Send one mail to ``to`` through the SMTP connection ``conn_id``.

    ``body_html`` is the HTML body; without it the plain text is sent as preformatted HTML (the
    provider's hook sends an HTML part). Timeouts come from the connection's ``timeout`` extra. The
    server's certificate is verified (``clients.smtp_tls``: the connection's ``ca_file`` extra, else
    the system trust store) before the hook logs in.
    """
    recipients = [addr for addr in to if addr]
    if not recipients:
        raise ValueError(f"no recipients for mail {subject!r}")

    content = body_html if body_html is not None else _text_as_html(body_text)
    hook = _verifying_smtp_hook(conn_id)
    secret = None
    try:
        with hook:
            hook.get_conn()
            secret = hook.smtp_password
            hook.send_email_smtp(
                to=recipients,
                subject=subject,
                html_content=content,
                from_email=hook.from_email or mail_from(),
            )
    except Exception as exc:  # re-raised as one clear error, secrets removed
        raise MessagingError(
            f"mail {subject!r} to {len(recipients)} recipient(s) not sent through SMTP connection "
            f"{conn_id!r}: {_redact(exc, secret)}; check that the mail server is reachable and the "
            f"connection's host, port and credentials"
        ) from None


def send_slack(text: str, *, blocks: list[dict] | None = None, conn_id: str = config.SLACK_CONN_ID) -> None:
    """Post ``text`` (and optional Block Kit ``blocks``) through the Slack webhook connection."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    secret = None
    try:
        hook = SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=None)
        conn = hook.get_connection(conn_id)
        secret = conn.password
        if not conn.extra_dejson.get("timeout"):
            hook.timeout = DEFAULT_TIMEOUT_S
        hook.send(text=text, blocks=blocks)
    except Exception as exc:  # re-raised as one clear error, secrets removed
        raise MessagingError(
            f"Slack message not posted through connection {conn_id!r}: {_redact(exc, secret)}; "
            f"check the webhook URL and that Slack (or the sink) is reachable"
        ) from None


def _verifying_smtp_hook(conn_id: str):
    """The provider's ``SmtpHook`` with our TLS: its own context cannot take a private CA and
    honours ``ssl_context: none``; a login without SSL or STARTTLS is refused before connecting."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    from bisman_ops.clients import smtp_tls

    class VerifyingSmtpHook(SmtpHook):
        def get_conn(self) -> SmtpHook:
            if not self._smtp_client:
                conn = self.get_connection(self.smtp_conn_id)
                extra = conn.extra_dejson or {}
                smtp_tls.refuse_clear_login(extra, bool(conn.login and conn.password), self.smtp_conn_id)
                smtp_tls.context(extra, self.smtp_conn_id)  # a bad ca_file fails before connecting
            return super().get_conn()

        # Used by the provider (3.2) for SMTP_SSL and for STARTTLS alike.
        def _build_ssl_context(self):
            return smtp_tls.context(self.conn.extra_dejson or {}, self.smtp_conn_id)

    return VerifyingSmtpHook(smtp_conn_id=conn_id)


def _text_as_html(text: str) -> str:
    return f'<pre style="font-family: monospace">{html.escape(text)}</pre>'


def _redact(exc: BaseException, secret: str | None) -> str:
    message = f"{type(exc).__name__}: {exc}"
    if secret:
        message = message.replace(secret, "***")
    return message[:500]
