"""The mail and Slack sink: one process, a real SMTP server and a Slack incoming-webhook look-alike.

Run by ``bisman_sandbox.sinks``:
``python -m bisman_sandbox.sink_server --smtp-port P --http-port Q --state-dir D --cert-dir C``.

SMTP (aiosmtpd) requires STARTTLS (a certificate of the sandbox's own CA, ``local_ca``, in ``C``:
clients verify it with ``C/root.pem``) and then AUTH LOGIN/PLAIN with the sandbox credentials, so a
wrong password, or a client that would log in without TLS, fails the way it would against a real
relay. The HTTP side answers ``POST /services/...``
like Slack (``ok``, or 400 ``invalid_payload``/``no_text``) and exposes what it caught at
``/_sink/mail`` and ``/_sink/slack`` (GET lists, DELETE clears). Captures are JSONL files in the
state dir, so they survive a restart of this process.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import re
import signal
import ssl
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from bisman_sandbox.context import HOST
from bisman_sandbox.sinks import SMTP_PASSWORD, SMTP_USER

log = logging.getLogger("bisman_sink")

MAX_BODY = 5 * 1024 * 1024


class CaptureFile:
    """An append-only JSONL file shared by the SMTP loop thread and the HTTP threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)

    def read(self) -> list[dict]:
        with self.lock:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def clear(self) -> None:
        with self.lock:
            self.path.write_text("")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class MailHandler:
    def __init__(self, captures: CaptureFile) -> None:
        self.captures = captures

    async def handle_DATA(self, server, session, envelope) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                       policy=email.policy.default)
        text_part = msg.get_body(preferencelist=("plain",))
        html_part = msg.get_body(preferencelist=("html",))
        # Bodies arrive with SMTP's CRLF line ends; store them the way Python writes text.
        html = html_part.get_content().replace("\r\n", "\n") if html_part is not None else ""
        text = text_part.get_content().replace("\r\n", "\n") if text_part is not None else _strip_tags(html)
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.captures.append({
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "subject": str(msg.get("subject", "")),
            "text": text,
            "html": html,
            "header_from": str(msg.get("from", "")),
            "header_to": str(msg.get("to", "")),
            "auth_login": login.decode() if isinstance(login, bytes) else login,
            "tls": session.ssl is not None,
            "received_at": _now(),
        })
        log.info("mail captured: %s -> %s", envelope.mail_from, envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def _strip_tags(html: str) -> str:
    html = re.sub(r"(?is)<(style|script|head)\b.*?</\1>", " ", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    if mechanism not in ("LOGIN", "PLAIN") or not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    log.info("smtp auth %s for %r", "accepted" if ok else "refused", auth_data.login)
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class RelaySMTP(SMTP):
    # aiosmtpd's AUTH LOGIN prompts "User Name\0"; Postfix and Exchange prompt "Username:", and
    # Alertmanager's LOGIN client accepts nothing else.
    AuthLoginUsernameChallenge = "Username:"
    AuthLoginPasswordChallenge = "Password:"


class RelayController(Controller):
    def factory(self) -> SMTP:
        return RelaySMTP(self.handler, **self.SMTP_kwargs)


def make_http_handler(mail: CaptureFile, slack: CaptureFile) -> type[BaseHTTPRequestHandler]:
    sinks = {"/_sink/mail": mail, "/_sink/slack": slack}

    class Handler(BaseHTTPRequestHandler):
        server_version = "bisman-sink"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/_sink/health":
                self._reply(200, "ok", "text/plain")
            elif path in sinks:
                self._reply(200, json.dumps(sinks[path].read()), "application/json")
            else:
                self._reply(404, "not_found", "text/plain")

        def do_DELETE(self) -> None:
            path = self.path.split("?", 1)[0]
            if path not in sinks:
                self._reply(404, "not_found", "text/plain")
                return
            sinks[path].clear()
            self._reply(204, "", "text/plain")

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._reply(413, "request_too_large", "text/plain")
                return
            body = self.rfile.read(length)
            if not path.startswith("/services/"):
                self._reply(404, "no_service", "text/plain")
                return
            payload = _slack_payload(self.headers.get("Content-Type", ""), body)
            if not isinstance(payload, dict):
                self._reply(400, "invalid_payload", "text/plain")
                return
            if not any(payload.get(k) for k in ("text", "blocks", "attachments")):
                self._reply(400, "no_text", "text/plain")
                return
            slack.append({"path": path, "payload": payload, "received_at": _now()})
            self._reply(200, "ok", "text/html")

        def _reply(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        def log_message(self, fmt: str, *args) -> None:
            # The last part of a webhook path is its secret token: keep it out of the log.
            log.info("http %s", _mask_webhook_token(fmt % args))

    return Handler


def _mask_webhook_token(line: str) -> str:
    return re.sub(r"(/services/[^/\s]+/[^/\s]+/)[^\s\"]+", r"\1***", line)


def _slack_payload(content_type: str, body: bytes):
    """Slack takes a JSON body, or a form with a ``payload`` field holding JSON."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            fields = parse_qs(body.decode())
            return json.loads(fields["payload"][0])
        return json.loads(body)
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True, help="chain.pem and leaf.key (local_ca)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    mail = CaptureFile(args.state_dir / "mail.jsonl")
    slack = CaptureFile(args.state_dir / "slack.jsonl")

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(args.cert_dir / "chain.pem", args.cert_dir / "leaf.key")
    smtp = RelayController(
        MailHandler(mail),
        hostname=HOST,
        port=args.smtp_port,
        authenticator=authenticate,
        auth_required=True,
        tls_context=tls,
        require_starttls=True,  # nothing but EHLO, NOOP, STARTTLS and QUIT before TLS
        auth_require_tls=True,
        ready_timeout=10.0,
    )
    smtp.start()
    http = ThreadingHTTPServer((HOST, args.http_port), make_http_handler(mail, slack))
    http.daemon_threads = True
    http.request_queue_size = 64

    def stop(signum, frame) -> None:
        # shutdown() blocks until serve_forever returns, so it must run off the serving thread.
        threading.Thread(target=http.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("smtp sink on %s:%d, slack sink on %s:%d", HOST, args.smtp_port, HOST, args.http_port)
    try:
        http.serve_forever(poll_interval=0.5)
    finally:
        http.server_close()
        smtp.stop()


if __name__ == "__main__":
    main()
