"""The application's HTTP API as the DAGs reach it: its base URL from the Airflow connection, and
its health endpoints (CONTRACT.md). One way to check health for the rollout and the rollbacks."""

from __future__ import annotations

from bisman_ops import config

HEALTH_PATHS = ("/health", "/api/health/db", "/api/health/redis")
HTTP_TIMEOUT_S = 5


def base_url(conn_id: str = config.APP_API_CONN_ID) -> str:
    """``scheme://host[:port]`` of an HTTP Airflow connection (host may carry the scheme)."""
    from airflow.sdk import BaseHook

    c = BaseHook.get_connection(conn_id)
    host = c.host if "://" in (c.host or "") else f"{c.schema or 'https'}://{c.host}"
    return f"{host}:{c.port}" if c.port else host


def probe_health(url: str, paths: tuple[str, ...] = HEALTH_PATHS,
                 timeout: float = HTTP_TIMEOUT_S) -> list[dict]:
    """One GET of each health endpoint: ``[{"path", "status", "ms", "body"}]``; status is the HTTP
    code, or ``no answer (Error)`` when nothing came back within the timeout."""
    import time

    import requests

    results = []
    for path in paths:
        started = time.monotonic()
        try:
            r = requests.get(f"{url.rstrip('/')}{path}", timeout=timeout)
            status: int | str = r.status_code
            body = r.text.strip()[:200]
        except requests.RequestException as exc:
            status, body = f"no answer ({type(exc).__name__})", ""
        results.append({"path": path, "status": status, "ms": round((time.monotonic() - started) * 1000),
                        "body": body})
    return results
