"""A STAND-IN for Grafana's HTTP API (Grafana is AGPL and not installable here), not Grafana.

It serves exactly the documented subset the rollout uses, with Grafana's status codes and bodies:

- ``GET /api/health``;
- ``GET /api/folders/{uid}``, ``POST /api/folders`` (``{"uid", "title"}``; 409 when the uid exists);
- ``POST /api/dashboards/db`` (``{"dashboard", "folderUid", "overwrite", "message"}``): a new uid is
  created at version 1; an existing one is updated when ``overwrite`` is true or the posted
  ``dashboard.version`` equals the stored one, otherwise 412 ``version-mismatch``; a different uid
  with the same title in the folder is 412 ``name-exists`` unless ``overwrite``;
- ``GET /api/dashboards/uid/{uid}`` (``{"dashboard", "meta"}``; 404 unknown).

Every call needs ``Authorization: Bearer <token>`` (the service-account token the connection holds).
Nothing is rendered: there are no panels to look at, only the stored JSON. State is kept in a JSON
file so a restart keeps what was imported.

    python -m bisman_sandbox.grafana_standin --port P --token T --state FILE
"""

from __future__ import annotations

import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERSION = "stand-in (Grafana HTTP API subset)"
_SLUG = re.compile(r"[^a-z0-9]+")


def slug(title: str) -> str:
    return _SLUG.sub("-", title.lower()).strip("-")


class Store:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, dict] = {"folders": {}, "dashboards": {}, "next_id": 1}
        if path.exists():
            self.data = json.loads(path.read_text())

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)

    def new_id(self) -> int:
        self.data["next_id"] += 1
        return self.data["next_id"] - 1


def save_dashboard(store: Store, body: dict) -> tuple[int, dict]:
    dash = body.get("dashboard")
    if not isinstance(dash, dict) or not dash.get("title"):
        return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
    folder_uid = body.get("folderUid") or ""
    overwrite = bool(body.get("overwrite"))
    with store.lock:
        if folder_uid and folder_uid not in store.data["folders"]:
            return 400, {"message": "folder not found", "status": "folder-not-found"}
        uid = dash.get("uid") or f"d{store.data['next_id']:08d}"
        stored = store.data["dashboards"].get(uid)
        for other_uid, other in store.data["dashboards"].items():
            if (other_uid != uid and other["folderUid"] == folder_uid
                    and other["dashboard"]["title"] == dash["title"] and not overwrite):
                return 412, {"message": "A dashboard with the same name in the folder already exists",
                             "status": "name-exists"}
        if stored is not None and not overwrite and dash.get("version") != stored["dashboard"]["version"]:
            return 412, {"message": "The dashboard has been changed by someone else",
                         "status": "version-mismatch"}
        version = stored["dashboard"]["version"] + 1 if stored else 1
        dash_id = stored["dashboard"]["id"] if stored else store.new_id()
        saved = {**dash, "uid": uid, "id": dash_id, "version": version}
        url = f"/d/{uid}/{slug(dash['title'])}"
        store.data["dashboards"][uid] = {"dashboard": saved, "folderUid": folder_uid, "url": url,
                                         "message": str(body.get("message") or "")}
        store.save()
    return 200, {"id": dash_id, "uid": uid, "url": url, "status": "success", "version": version,
                 "slug": slug(dash["title"]), "folderUid": folder_uid}


class Handler(BaseHTTPRequestHandler):
    store: Store
    token: str

    def log_message(self, fmt: str, *args: Any) -> None:  # the request line only, never headers
        super().log_message(fmt, *args)

    def _send(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.token}":
            return True
        self._send(401, {"message": "Unauthorized"})
        return False

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/health":
            return self._send(200, {"database": "ok", "version": VERSION})
        if not self._authorized():
            return None
        data = self.store.data
        if path.startswith("/api/folders/"):
            folder = data["folders"].get(path.rsplit("/", 1)[1])
            return self._send(200, folder) if folder else self._send(404, {"message": "Folder not found"})
        if path.startswith("/api/dashboards/uid/"):
            stored = data["dashboards"].get(path.rsplit("/", 1)[1])
            if not stored:
                return self._send(404, {"message": "Dashboard not found"})
            dash = stored["dashboard"]
            return self._send(200, {"dashboard": dash, "meta": {
                "folderUid": stored["folderUid"], "version": dash["version"], "url": stored["url"],
                "slug": slug(dash["title"]), "provisioned": False}})
        return self._send(404, {"message": "Not found (not in the stand-in's API subset)"})

    def do_POST(self) -> None:
        if not self._authorized():
            return None
        body = self._body()
        if not isinstance(body, dict):
            return self._send(400, {"message": "bad request data"})
        if self.path == "/api/folders":
            uid, title = body.get("uid"), body.get("title")
            if not uid or not title:
                return self._send(400, {"message": "folder uid and title are required"})
            with self.store.lock:
                if uid in self.store.data["folders"]:
                    return self._send(409, {"message": "a folder with the same uid already exists"})
                folder = {"id": self.store.new_id(), "uid": uid, "title": title,
                          "url": f"/dashboards/f/{uid}"}
                self.store.data["folders"][uid] = folder
                self.store.save()
            return self._send(200, folder)
        if self.path == "/api/dashboards/db":
            return self._send(*save_dashboard(self.store, body))
        return self._send(404, {"message": "Not found (not in the stand-in's API subset)"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    handler = type("BoundHandler", (Handler,), {"store": Store(args.state), "token": args.token})
    ThreadingHTTPServer(("127.0.0.1", args.port), handler).serve_forever()


if __name__ == "__main__":
    main()
