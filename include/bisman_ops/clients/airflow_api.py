"""The REST API (``/api/v2``) of the Airflow the rollout runs on, for what a task must not read from
its own process: which DAGs the deployment actually parsed, their schedules and pause state, their
runs and what those runs returned.

The Airflow connection ``airflow_api`` (an HTTP connection) carries the API's base URL as its host
and a login (user and password) that ``POST /auth/token`` turns into a short-lived bearer token.
The token and the password stay inside this module: never logged, never in an error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

AIRFLOW_API_CONN_ID = "airflow_api"
PAGE = 100  # the API's default maximum_page_limit
HTTP_TIMEOUT_S = 30  # a loaded scheduler host answers slowly; every call is still bounded


class AirflowApiError(RuntimeError):
    """A call that did not answer as expected: method, path, status and the start of the body."""


@dataclass
class AirflowApi:
    base_url: str
    username: str
    password: str = field(repr=False)
    timeout: float = HTTP_TIMEOUT_S
    _session: Any = field(default=None, repr=False)

    @classmethod
    def from_connection(cls, conn_id: str = AIRFLOW_API_CONN_ID) -> AirflowApi:
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="GET", http_conn_id=conn_id)
        conn = hook.get_connection(conn_id)
        return cls(hook.url_from_endpoint("").rstrip("/"), conn.login or "", conn.password or "")

    def _authorised(self) -> Any:
        if self._session is None:
            import requests

            session = requests.Session()
            login = {"username": self.username, "password": self.password}
            r = session.post(f"{self.base_url}/auth/token", json=login, timeout=self.timeout)
            if r.status_code not in (200, 201):
                raise AirflowApiError(f"POST /auth/token as {self.username!r} at {self.base_url}: HTTP "
                                      f"{r.status_code} (check the {AIRFLOW_API_CONN_ID} connection's login)")
            session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            self._session = session
        return self._session

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        """``method /api/v2{path}``; the JSON body, or None for a 404 when 404 is in ``ok``."""
        url = f"{self.base_url}/api/v2{path}"
        r = self._authorised().request(method, url, timeout=self.timeout, **kwargs)
        if r.status_code not in ok:
            raise AirflowApiError(f"{method} /api/v2{path}: HTTP {r.status_code}: {r.text[:300]}")
        if r.status_code == 404 or not r.content:
            return None
        return r.json()

    # -- what the rollout reads and does -------------------------------------------------------------

    def dag(self, dag_id: str) -> dict | None:
        """The DAG as the deployment parsed it (``is_paused``, ``timetable_summary``,
        ``has_import_errors``, ``fileloc``...), None when it is not there."""
        return self.call("GET", f"/dags/{quote(dag_id)}", ok=(200, 404))

    def _all(self, path: str, key: str) -> list[dict]:
        """Every entry of a listing, page by page (the API caps a page at its maximum_page_limit,
        100 by default, whatever limit is asked for)."""
        entries: list[dict] = []
        while True:
            page = self.call("GET", path, params={"limit": PAGE, "offset": len(entries)})
            entries += page[key]
            if not page[key] or len(entries) >= page["total_entries"]:
                return entries

    def import_errors(self) -> list[dict]:
        """Every file the DAG processor failed to import: ``filename`` and ``stack_trace``."""
        return self._all("/importErrors", "import_errors")

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        return self.call("PATCH", f"/dags/{quote(dag_id)}", json={"is_paused": paused})

    def dag_run(self, dag_id: str, run_id: str) -> dict | None:
        return self.call("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}", ok=(200, 404))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._all(f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances", "task_instances")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value in that run (deserialised), None when there is none."""
        entry = self.call("GET", f"/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/"
                                 f"{quote(task_id)}/xcomEntries/{quote(key)}",
                          params={"deserialize": "true", "stringify": "false"}, ok=(200, 404))
        return None if entry is None else entry.get("value")
