"""Dashboards into Grafana through its HTTP API with grafana-client: the folder, then
``POST /api/dashboards/db`` per dashboard, each answer checked (uid, version, url) and read back.

The connection (``grafana_default``): host = Grafana's base URL (scheme included), port, password =
a service-account token (Editor on the folder). Nothing here renders a panel: what is checked is
what Grafana stored, never what it draws.
"""

from __future__ import annotations

from typing import Any

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed

TIMEOUT_S = 10.0


def api(conn_id: str = config.GRAFANA_CONN_ID) -> Any:
    from airflow.sdk import BaseHook
    from grafana_client import GrafanaApi

    conn = BaseHook.get_connection(conn_id)
    host = (conn.host or "").rstrip("/")
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}"
    url = f"{host}:{conn.port}" if conn.port else host
    if not conn.password:
        raise CheckFailed(
            f"the {conn_id} connection",
            "no token (password empty)",
            "a Grafana service-account token in the password",
            "Set it, then clear this task",
        )
    return GrafanaApi.from_url(url, credential=conn.password, timeout=TIMEOUT_S)


def ensure_folder(grafana: Any, uid: str, title: str) -> dict[str, Any]:
    from grafana_client.client import GrafanaClientError

    try:
        folder = grafana.folder.get_folder(uid)
        return {"uid": folder["uid"], "title": folder["title"], "created": False}
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    folder = grafana.folder.create_folder(title, uid=uid)
    return {"uid": folder["uid"], "title": folder["title"], "created": True}


def import_dashboard(
    grafana: Any, model: dict[str, Any], folder_uid: str, *, overwrite: bool, message: str
) -> dict[str, Any]:
    """Save ``model`` into the folder and check Grafana's answer and what it stored.

    ``overwrite=False`` sends the version last read from Grafana, so a dashboard changed by
    someone in between is a 412 version conflict, reported as such (nothing overwritten).
    """
    from grafana_client.client import GrafanaClientError

    uid = model["uid"]
    dashboard = {**model, "id": None}
    current = _stored(grafana, uid)
    if current is not None and not overwrite:
        dashboard["version"] = current["dashboard"].get("version")
    try:
        answer = grafana.dashboard.update_dashboard(
            {"dashboard": dashboard, "folderUid": folder_uid, "overwrite": overwrite, "message": message}
        )
    except GrafanaClientError as exc:
        if exc.status_code == 412:
            status = (exc.response or {}).get("status") if isinstance(exc.response, dict) else None
            raise CheckFailed(
                f"import of dashboard {uid} into folder {folder_uid}",
                f"HTTP 412 {status or ''}: "
                f"{(exc.response or {}).get('message') if isinstance(exc.response, dict) else exc}",
                "saved (no one else changed it since it was read)",
                f"Another dashboard in that folder is titled {model.get('title')!r}: rename or move it in "
                "Grafana, then clear this task" if status == "name-exists" else
                "Someone changed the dashboard in Grafana: keep their change in the code (then export) or "
                "trigger with grafana_overwrite, then clear this task",
            ) from None
        raise
    problems = []
    if answer.get("status") != "success" or answer.get("uid") != uid:
        problems.append(f"answer {answer}")
    if not isinstance(answer.get("version"), int) or answer["version"] < 1:
        problems.append(f"version {answer.get('version')!r}")
    if not str(answer.get("url", "")).startswith("/d/"):
        problems.append(f"url {answer.get('url')!r}")
    stored = _stored(grafana, uid)
    if stored is None:
        problems.append("not found by uid after the save")
    else:
        if stored["meta"].get("folderUid") != folder_uid:
            problems.append(f"in folder {stored['meta'].get('folderUid')!r}")
        if stored["dashboard"].get("version") != answer.get("version"):
            problems.append(f"stored version {stored['dashboard'].get('version')} != {answer.get('version')}")
        if _panel_titles(stored["dashboard"]) != _panel_titles(model):
            problems.append("stored panels differ from the export")
    if problems:
        raise CheckFailed(
            f"dashboard {uid} after the import",
            "; ".join(problems),
            "status success, its uid, a version >= 1, a /d/ url, stored in the folder as sent",
            "Check Grafana's log, then clear this task",
        )
    return {
        "uid": uid,
        "version": answer["version"],
        "url": answer["url"],
        "folder_uid": folder_uid,
        "previous_version": current["dashboard"].get("version") if current else None,
    }


def _stored(grafana: Any, uid: str) -> dict[str, Any] | None:
    from grafana_client.client import GrafanaClientError

    try:
        return grafana.dashboard.get_dashboard(uid)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def _panel_titles(model: dict[str, Any]) -> list[str]:
    return [p.get("title", "") for p in model.get("panels") or []]
