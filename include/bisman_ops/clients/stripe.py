"""Stripe through the official SDK (``stripe.StripeClient``): the one way the project reaches it.

The Airflow connection ``bisman_stripe`` holds the API base in its host (with or without a scheme:
``api.stripe.com`` means ``https://api.stripe.com``), the secret key in its password, and optional
extras ``timeout`` and ``max_network_retries``. The SDK retries timeouts and 5xx answers; writes
carry idempotency keys so a retry never repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass

import stripe

from bisman_ops import config

DEFAULT_API_BASE = "https://api.stripe.com"
REQUEST_TIMEOUT_S = 20
DEFAULT_NETWORK_RETRIES = 2


def api_base(host: str | None, schema: str | None = None) -> str:
    """The API base URL of a connection's host; a bare host gets ``schema`` or ``https``."""
    base = (host or "").strip() or DEFAULT_API_BASE
    if "://" not in base:
        base = f"{schema or 'https'}://{base}"
    return base.rstrip("/")


def make_client(
    api_key: str,
    base: str = DEFAULT_API_BASE,
    *,
    timeout: float = REQUEST_TIMEOUT_S,
    retries: int = DEFAULT_NETWORK_RETRIES,
) -> stripe.StripeClient:
    base = api_base(base)
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": base, "files": base, "connect": base, "meter_events": base},
        http_client=stripe.RequestsClient(timeout=timeout),
        max_network_retries=retries,
    )


def client_from_connection(
    conn_id: str = config.STRIPE_CONN_ID, *, api_key: str | None = None
) -> stripe.StripeClient:
    """A client for the Airflow connection ``conn_id`` (``api_key`` overrides its password, e.g. a
    key read from Secrets Manager)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    return make_client(
        api_key or conn.password or "",
        api_base(conn.host, conn.schema if conn.schema in ("http", "https") else None),
        timeout=float(extra.get("timeout", REQUEST_TIMEOUT_S)),
        retries=int(extra.get("max_network_retries", DEFAULT_NETWORK_RETRIES)),
    )


@dataclass(frozen=True)
class KeyCheck:
    """What Stripe said to one cheap authenticated read (list one customer)."""

    ok: bool
    status: int | None  # the HTTP status, None when nothing answered
    problem: str  # "" when ok; otherwise what went wrong, never the key

    def as_dict(self) -> dict:
        return {"ok": self.ok, "stripe_status": self.status, "problem": self.problem}


def check_key(client: stripe.StripeClient) -> KeyCheck:
    """Does Stripe accept the client's key? Refusals (401/403) and no answer are told apart."""
    try:
        client.v1.customers.list(params={"limit": 1})
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        return KeyCheck(False, exc.http_status, f"Stripe refused the key (HTTP {exc.http_status})")
    except stripe.APIConnectionError as exc:
        return KeyCheck(False, None, f"Stripe API unreachable ({type(exc).__name__})")
    except stripe.StripeError as exc:
        return KeyCheck(False, exc.http_status, f"Stripe answered HTTP {exc.http_status}")
    return KeyCheck(True, 200, "")
