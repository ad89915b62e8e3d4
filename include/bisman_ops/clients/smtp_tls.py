"""TLS for SMTP logins that verifies the server before any password is sent.

Python's smtplib verifies nothing unless given a context (``starttls()`` and ``SMTP_SSL()`` without
one use an unverified context), and the smtp provider's ``SmtpHook`` verifies against the system
trust store only, or not at all with ``ssl_context: none``. Every SMTP login of bisman-ops goes
through ``context``: the certificate chain and the host name are checked, against the connection's
``ca_file`` extra (a CA of the deployment's own) or else the system trust store, at TLS 1.2 or later.
A connection that would send credentials with neither SSL nor STARTTLS is refused.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CA_FILE_EXTRA = "ca_file"


class SmtpTlsError(ValueError):
    """An SMTP connection's TLS settings would expose its password; the message names the setting."""


def context(extra: Mapping[str, Any], conn_id: str = "SMTP") -> ssl.SSLContext:
    """A verifying client context for the connection whose extra is ``extra``."""
    if extra.get("ssl_context") == "none":
        raise SmtpTlsError(f"SMTP connection {conn_id!r} sets ssl_context: none (no certificate check); "
                           f"remove it, and set {CA_FILE_EXTRA} to the server's CA if the system trust "
                           "store does not hold it")
    ca_file = extra.get(CA_FILE_EXTRA) or None
    if ca_file is not None and not Path(str(ca_file)).is_file():
        raise SmtpTlsError(f"SMTP connection {conn_id!r}: {CA_FILE_EXTRA} {ca_file} is not a readable file")
    try:
        ctx = ssl.create_default_context(cafile=ca_file)  # CERT_REQUIRED and host name checked
    except ssl.SSLError as exc:
        raise SmtpTlsError(f"SMTP connection {conn_id!r}: {CA_FILE_EXTRA} {ca_file} holds no usable "
                           f"CA certificate ({exc.reason or exc})") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def refuse_clear_login(extra: Mapping[str, Any], has_password: bool, conn_id: str = "SMTP") -> None:
    """Raise when the connection would log in without TLS (both SSL and STARTTLS disabled)."""
    if has_password and extra.get("disable_ssl", False) and extra.get("disable_tls", False):
        raise SmtpTlsError(f"SMTP connection {conn_id!r} disables both SSL (disable_ssl) and STARTTLS "
                           "(disable_tls): its password would cross the network in clear; enable one")


def verify_failure(exc: BaseException) -> str | None:
    """What a certificate check refused, when ``exc`` is that refusal (None otherwise)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc)
    return None
