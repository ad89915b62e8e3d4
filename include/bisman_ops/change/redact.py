"""Secrets out of everything a change writes down (reports, records, notices, failure messages):
values under keys that name a secret and values that look like one become ``***``."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

_SENSITIVE_WORDS = {
    "password",
    "passwd",
    "pwd",
    "secret",
    "secrets",
    "token",
    "apikey",
    "credential",
    "credentials",
    "authorization",
    "cookie",
    "dsn",
}
# "key" alone is too common to redact everywhere: "s3_key", "json_key", "sort_key" are harmless.
_HARMLESS_BEFORE_KEY = {
    "s3",
    "object",
    "json",
    "md",
    "markdown",
    "report",
    "sort",
    "hash",
    "partition",
    "lock",
    "cache",
    "idempotency",
    "dedup",
    "primary",
    "foreign",
    "state",
}
# A key naming where a secret lives, not the secret: app_secrets_arn, secret_name.
# Nor one naming a check of a secret or a measure of it: app_secrets_valid, jwt_secret_bits.
_REFERENCE_WORDS = {"arn", "name", "id", "identifier", "count", "version", "expires", "rotated", "path",
                    "valid", "checked", "present", "bits", "length", "mode", "strength", "seconds"}

_VALUE_PATTERNS = [
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{6,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{6,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    # scheme://user:password@host -> scheme://user:***@host (postgres, redis, amqp, http, ...)
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):([^@\s/]+)@"), rf"\1:{REDACTED}@"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token)=([^\s&;]+)"), rf"\1={REDACTED}"),
]


def _words(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", key)
    return [w for w in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if w]


def is_sensitive_key(key: str) -> bool:
    words = _words(key)
    if words and words[-1] in _REFERENCE_WORDS:
        return False
    for i, word in enumerate(words):
        if word in _SENSITIVE_WORDS:
            return True
        if word == "key" and (i == 0 or words[i - 1] not in _HARMLESS_BEFORE_KEY):
            return True
        if word.endswith("password") or word.endswith("secret") or word.endswith("token"):
            return True
    return False


def redact_text(text: str) -> str:
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, key: str | None = None) -> Any:
    """``value`` with every secret replaced by ``***`` (recursively through dicts and lists)."""
    # A boolean or a number under a secret-sounding key is a check's outcome or a timing, not a
    # secret; strings and containers are redacted.
    if (key is not None and is_sensitive_key(key) and value not in (None, "", [], {})
            and not isinstance(value, bool | int | float)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def mask_in_logs(*values: str | None) -> None:
    """Register ``values`` with Airflow's secret masker, so every later log line of this process
    (and, in a task, of its supervisor) shows ``***`` for them. Call it the moment a secret is read or
    made, before anything can log it. Values shorter than the masker's minimum (5) are not masked."""
    from airflow.sdk.log import mask_secret

    for value in values:
        if value:
            mask_secret(str(value))
