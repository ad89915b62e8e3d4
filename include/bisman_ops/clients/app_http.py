"""The application's HTTP API (CONTRACT.md and docs/contract-additions.md) through ``HttpHook``.

The base URL, headers and TLS options come from the Airflow connection ``bisman_app_api`` (its host
may carry the scheme; without one the provider uses the connection's schema, then ``http``).
``request`` retries what is worth retrying (no answer, 502/503/504) a bounded number of times with
a bounded wait; ``probe_health`` asks each health endpoint once, for a sensor to poke.
"""

from __future__ import annotations

import time
from typing import Any

from bisman_ops import config

HEALTH_PATHS = ("/health", "/api/health/db", "/api/health/redis")
HTTP_TIMEOUT_S = 5
RETRY_ATTEMPTS = 3
RETRY_WAIT_MAX_S = 4
RETRY_STATUSES = (502, 503, 504)


class RetryableStatus(Exception):
    """A gateway status worth one more try; carries the response."""

    def __init__(self, response: Any) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _hook(method: str, conn_id: str):
    from airflow.providers.http.hooks.http import HttpHook

    return HttpHook(method=method.upper(), http_conn_id=conn_id)


def base_url(conn_id: str = config.APP_API_CONN_ID) -> str:
    """``scheme://host[:port]`` of the HTTP Airflow connection ``conn_id``."""
    return _hook("GET", conn_id).url_from_endpoint("").rstrip("/")


def request(
    method: str,
    path: str,
    *,
    conn_id: str = config.APP_API_CONN_ID,
    json: Any = None,
    params: dict | None = None,
    headers: dict | None = None,
    timeout: float = HTTP_TIMEOUT_S,
    attempts: int = RETRY_ATTEMPTS,
    base_url: str | None = None,
) -> Any:
    """One call of the application's API; returns the ``requests.Response`` whatever its status
    (the caller decides what a 4xx means), after at most ``attempts`` tries. ``base_url`` calls
    that address (e.g. Terraform's ``api_base_url``, the load balancer) instead of the connection's."""
    import requests
    import tenacity

    hook = None if base_url else _hook(method, conn_id)

    def once() -> Any:
        if hook is None:
            r = requests.request(method.upper(), f"{base_url.rstrip('/')}{path}", params=params,
                                 headers=headers, json=json, timeout=timeout)
        else:
            r = hook.run(
                path,
                data=params,
                headers=headers,
                json=json,
                extra_options={"timeout": timeout, "check_response": False},
            )
        if r.status_code in RETRY_STATUSES:
            raise RetryableStatus(r)
        return r

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential(multiplier=0.5, max=RETRY_WAIT_MAX_S),
        retry=tenacity.retry_if_exception_type((requests.ConnectionError, requests.Timeout, RetryableStatus)),
        reraise=True,
    )
    try:
        return retrying(once)
    except RetryableStatus as exc:
        return exc.response


def probe_health(
    conn_id: str = config.APP_API_CONN_ID,
    paths: tuple[str, ...] = HEALTH_PATHS,
    timeout: float = HTTP_TIMEOUT_S,
    base_url: str | None = None,
) -> list[dict]:
    """One GET of each health endpoint: ``[{"path", "status", "ms", "body"}]``; status is the HTTP
    code, or ``no answer (Error)`` when nothing came back within the timeout. ``base_url`` as in
    ``request``."""
    import requests

    results = []
    for path in paths:
        started = time.monotonic()
        try:
            r = request("GET", path, conn_id=conn_id, timeout=timeout, attempts=1, base_url=base_url)
            status: int | str = r.status_code
            body = r.text.strip()[:200]
        except requests.RequestException as exc:
            status, body = f"no answer ({type(exc).__name__})", ""
        results.append(
            {"path": path, "status": status, "ms": round((time.monotonic() - started) * 1000), "body": body}
        )
    return results


def unhealthy(results: list[dict]) -> list[str]:
    """``path -> status`` of every probe that did not answer 200."""
    return [f"{r['path']} -> {r['status']}" for r in results if r["status"] != 200]
