"""A local Airflow for the sandbox: ``airflow standalone`` configured by environment variables,
plus a small REST client to trigger runs and answer approvals the way the UI does.

    python -m bisman_sandbox.airflow_local up|down|status
    python -m bisman_sandbox.airflow_local trigger DAG_ID [--conf JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bisman_sandbox.context import HOST, PROJECT_ROOT
from bisman_sandbox.process import (
    SandboxError,
    pid_alive,
    port_open,
    read_pid,
    start_process,
    stop_process,
    wait_until,
)

ADMIN_USER = "admin"
TIMEOUT = 10  # seconds, every REST call


@dataclass(frozen=True)
class AirflowLocal:
    home: Path
    port: int

    @classmethod
    def from_env(cls) -> AirflowLocal:
        home = Path(os.environ.get("AIRFLOW_HOME", PROJECT_ROOT / ".airflow" / "run")).resolve()
        return cls(home=home, port=int(os.environ.get("BISMAN_AIRFLOW_PORT", "8080")))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    def password(self) -> str:
        """The admin password: generated once, kept in the git-ignored Airflow home."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            self.password_file.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
            self.password_file.chmod(0o600)
        return json.loads(self.password_file.read_text())[ADMIN_USER]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Airflow's configuration, all of it by environment variables."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # A 2-core machine: a few task processes at once, not Airflow's default of 32.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # Side ports next to the API's, on loopback, so two local Airflows (a rehearsal and a test
            # run) never fight over Airflow's fixed defaults 8793, 8794 and 8974.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.port + 2),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.port + 3),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # standalone starts its components as `airflow ...` from PATH.
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT / "include"), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        env.update(extra or {})
        return env

    # -- process -------------------------------------------------------------------------------
    def up(self, extra_env: dict[str, str] | None = None, timeout: float = 180) -> None:
        ctx = _ctx_for(self)
        self.password()
        if not _running(ctx):
            taken = [p for p in range(self.port, self.port + 4) if port_open(p)]
            if taken:
                raise SandboxError(f"ports {taken} are taken by another process; Airflow needs "
                                   f"{self.port}-{self.port + 3}: set BISMAN_AIRFLOW_PORT")
            airflow = str(Path(sys.executable).with_name("airflow"))
            start_process(ctx, "airflow", [airflow, "standalone"], env=self.environment(extra_env))
        wait_until(self.healthy, timeout=timeout, what=f"Airflow at {self.url}", interval=1)

    def down(self) -> bool:
        return stop_process(_ctx_for(self), "airflow", timeout=30)

    def healthy(self) -> bool:
        import requests

        try:
            r = requests.get(f"{self.url}/api/v2/monitor/health", timeout=TIMEOUT)
        except requests.RequestException:
            return False
        if r.status_code != 200:
            return False
        body = r.json()
        return all(
            body.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def client(self) -> AirflowClient:
        return AirflowClient(self.url, ADMIN_USER, self.password())


def _ctx_for(af: AirflowLocal):
    from bisman_sandbox.context import SandboxContext

    return SandboxContext(state_dir=af.home)


def _running(ctx) -> bool:
    pid = read_pid(ctx, "airflow")
    return pid is not None and pid_alive(pid)


class AirflowClient:
    """The REST calls an operator's UI makes: unpause, trigger with a form's conf, approve."""

    def __init__(self, url: str, username: str, password: str):
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        r = self.session.post(f"{self.url}/auth/token", json={"username": username, "password": password},
                              timeout=TIMEOUT)
        r.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, **kwargs):
        r = self.session.request(method, f"{self.url}/api/v2{path}", timeout=TIMEOUT, **kwargs)
        if r.status_code >= 400:
            raise SandboxError(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        def parsed() -> bool:
            r = self.session.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=TIMEOUT)
            return r.status_code == 200

        wait_until(parsed, timeout=timeout, what=f"DAG {dag_id} parsed", interval=2)

    def import_errors(self) -> list[dict]:
        return self._call("GET", "/importErrors")["import_errors"]

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=500")["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600,
                     until: tuple[str, ...] = ("success", "failed")) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run(dag_id, run_id)["state"]
            if state in until:
                return state
            time.sleep(2)
        raise SandboxError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")

    def wait_for_task_state(self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...],
                            timeout: float = 300) -> str:
        def reached() -> bool:
            r = self.session.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                                 timeout=TIMEOUT)
            return r.status_code == 200 and r.json().get("state") in states

        wait_until(reached, timeout=timeout, what=f"{dag_id}.{task_id} in {states}", interval=2)
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")["state"]

    def answer_approval(self, dag_id: str, run_id: str, task_id: str, option: str = "Approve",
                        params_input: dict | None = None) -> dict:
        return self._call(
            "PATCH",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails",
            json={"chosen_options": [option], "params_input": params_input or {}},
        )

    def hitl_details(self, dag_id: str, run_id: str, task_id: str) -> dict:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bisman_sandbox.airflow_local")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    trig = sub.add_parser("trigger")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default="{}")
    args = parser.parse_args(argv)
    af = AirflowLocal.from_env()
    if args.command == "up":
        from bisman_sandbox.launcher import airflow_connection_env

        af.up(extra_env=airflow_connection_env())
        print(f"Airflow UI: {af.url}  (user {ADMIN_USER}, password in {af.password_file})")
    elif args.command == "down":
        print("Airflow stopped" if af.down() else "Airflow was not running")
    elif args.command == "status":
        print(f"Airflow at {af.url}: {'healthy' if af.healthy() else 'not healthy'}")
        return 0 if af.healthy() else 1
    elif args.command == "trigger":
        client = af.client()
        client.wait_for_dag(args.dag_id)
        client.unpause(args.dag_id)
        run_id = client.trigger(args.dag_id, json.loads(args.conf))
        print(f"Triggered {args.dag_id} run {run_id}: {af.url}/dags/{args.dag_id}/runs/{run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
