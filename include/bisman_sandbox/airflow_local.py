"""A local Airflow for the sandbox, run as its real components: ``api-server``, ``scheduler``,
``dag-processor`` and ``triggerer`` (plus Celery workers with ``BISMAN_AIRFLOW_EXECUTOR=CeleryExecutor``),
each a process started and stopped by PID, on a PostgreSQL metadata database of its own
(``bisman_sandbox.airflow_metadata``), configured by environment variables only. Also a small REST
client to trigger runs and answer approvals the way the UI does.

    python -m bisman_sandbox.airflow_local up|down|status
    python -m bisman_sandbox.airflow_local db      # the metadata database alone, migrated
    python -m bisman_sandbox.airflow_local trigger DAG_ID [--conf JSON]

Ports, from ``BISMAN_AIRFLOW_PORT`` (P, default 8080): P the API and UI, P+1 the worker log server,
P+2 the triggerer's log server, P+3 the scheduler's health check, P+4 the metadata database,
P+5 the Celery broker (Redis), P+6... the Celery workers' log servers.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bisman_sandbox.airflow_metadata import MetadataDatabase, keys
from bisman_sandbox.context import HOST, PROJECT_ROOT, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    kill_process,
    port_open,
    start_process,
    stop_process,
    wait_until,
)

ADMIN_USER = "admin"
TIMEOUT = 30  # seconds, every REST call (a loaded 2-core machine answers slowly)
MIGRATE_TIMEOUT_S = 600
# Task states a task does not leave by itself (a wait for another one is over).
ENDED = ("success", "failed", "skipped", "upstream_failed", "removed")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow's log servers bind every interface whatever the configuration says. Every component here
# shares this machine's log folder, which the API server reads directly, so none is started.
_SERVE_LOGS = {"api-server": (), "dag-processor": (), "scheduler": ("--skip-serve-logs",),
               "triggerer": ("--skip-serve-logs",)}
EXECUTORS = ("LocalExecutor", "CeleryExecutor")
# The components every task process is forked from start with the tasks' libraries imported.
_FORKS_TASKS = ("scheduler", "celery")


@dataclass(frozen=True)
class AirflowLocal:
    home: Path
    port: int
    executor: str = "LocalExecutor"
    celery_workers: int = 2

    @classmethod
    def from_env(cls) -> AirflowLocal:
        home = Path(os.environ.get("AIRFLOW_HOME", PROJECT_ROOT / ".airflow" / "run")).resolve()
        executor = os.environ.get("BISMAN_AIRFLOW_EXECUTOR", "LocalExecutor")
        if executor not in EXECUTORS:
            raise SandboxError(f"BISMAN_AIRFLOW_EXECUTOR={executor!r}: expected one of "
                               f"{', '.join(EXECUTORS)}")
        workers = os.environ.get("BISMAN_AIRFLOW_CELERY_WORKERS", "2")
        if not workers.isdigit() or int(workers) < 1:
            raise SandboxError(f"BISMAN_AIRFLOW_CELERY_WORKERS={workers!r}: expected a whole number >= 1")
        return cls(home=home, port=int(os.environ.get("BISMAN_AIRFLOW_PORT", "8080")), executor=executor,
                   celery_workers=int(workers))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def password_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json.generated"

    @property
    def metadata(self) -> MetadataDatabase:
        return MetadataDatabase(self.home, self.port + 4)

    @property
    def broker_port(self) -> int:
        return self.port + 5

    def worker_names(self) -> list[str]:
        if self.executor != "CeleryExecutor":
            return []
        return [f"worker{i}" for i in range(1, self.celery_workers + 1)]

    def ports(self) -> list[int]:
        return list(range(self.port, self.port + 6 + len(self.worker_names())))

    def ports_taken_by_others(self) -> list[int]:
        # The metadata database may already run (scripts/test.sh starts it first): its port is ours.
        ours = {self.metadata.port} if self.metadata.healthy() else set()
        return [p for p in self.ports() if p not in ours and port_open(p)]

    def password(self) -> str:
        """The admin password: generated once, kept in the git-ignored Airflow home."""
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({ADMIN_USER: secrets.token_urlsafe(12)}, f)
        return json.loads(self.password_file.read_text())[ADMIN_USER]

    def database_environment(self) -> dict[str, str]:
        """What any Airflow process (a component, ``airflow db migrate``, a test calling
        ``dag.test()``) needs to reach the metadata database."""
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata.sqlalchemy_url(),
            "AIRFLOW__CORE__FERNET_KEY": keys(self.home)["fernet_key"],
        }

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Airflow's configuration, all of it by environment variables."""
        self.home.mkdir(parents=True, exist_ok=True)
        shared = keys(self.home)
        env = {
            **self.database_environment(),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            # A 2-core machine: a few task processes at once, not Airflow's default of 32.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
            # One secret for every component that signs or checks a token (API server, scheduler,
            # workers): generated once per Airflow home, never printed.
            "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
            "AIRFLOW__API__SECRET_KEY": shared["api_secret_key"],
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # An unchanged DAG file is parsed again every 5 min, not every 30 s: on 2 cores that
            # re-parsing took a fifth of a core from the tasks. A file whose mtime moved is still
            # parsed at the next bundle refresh (the processor's "changed recently").
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
            # An idle scheduler looks for the next task twice a second. Airflow's 1 s adds half a
            # second on average to each of the rollout's mostly serial tasks; 0.25 s cost, with a
            # rollout run in progress, 12-19 s of the scheduler's CPU a minute (0.5 s: 8, 1 s: 4).
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # The rollout's scheduled_jobs phase reads this Airflow's own REST API through it.
            "AIRFLOW_CONN_AIRFLOW_API": json.dumps({"conn_type": "http", "host": self.url,
                                                    "login": ADMIN_USER, "password": self.password()}),
            # Side ports next to the API's, on loopback, so two local Airflows (a rehearsal and a test
            # run) never fight over Airflow's fixed defaults 8793, 8794 and 8974.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port + 1),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.port + 2),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(self.port + 3),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(PROJECT_ROOT / "include"), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        if self.executor == "CeleryExecutor":
            env["AIRFLOW__CELERY__BROKER_URL"] = f"redis://{HOST}:{self.broker_port}/0"
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + self.metadata.sqlalchemy_url().replace(
                "postgresql+psycopg2", "postgresql", 1)
        env.update(extra or {})
        return env

    # -- processes -----------------------------------------------------------------------------
    @property
    def _processes(self) -> SandboxContext:
        return SandboxContext(state_dir=self.home / "processes")

    def _airflow(self, *args: str) -> list[str]:
        if args[0] in _FORKS_TASKS:
            return [sys.executable, "-m", "bisman_sandbox.preloaded_airflow", *args]
        return [str(Path(sys.executable).with_name("airflow")), *args]

    def up(self, extra_env: dict[str, str] | None = None, timeout: float = 300) -> None:
        self.password()
        running = [c for c in (*COMPONENTS, *self.worker_names()) if is_running(self._processes, c)]
        if not running:
            taken = self.ports_taken_by_others()
            if taken:
                raise SandboxError(f"ports {taken} are taken by another process; Airflow needs "
                                   f"{self.ports()[0]}-{self.ports()[-1]}: set BISMAN_AIRFLOW_PORT")
        self.metadata.up()
        env = self.environment(extra_env)
        self.migrate(env)
        if self.executor == "CeleryExecutor":
            self._start_broker()
        for component in COMPONENTS:
            start_process(self._processes, component, self._airflow(component, *_SERVE_LOGS[component]),
                          env=env)
        for i, name in enumerate(self.worker_names()):
            worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.port + 6 + i),
                          # Workers share this host: each task records which worker ran it.
                          "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
                          "BISMAN_WORKER_HOSTNAME": f"{name}@{HOST}"}
            start_process(self._processes, name,
                          self._airflow("celery", "worker", "--celery-hostname", f"{name}@{HOST}",
                                        "--concurrency", "2", "--skip-serve-logs"), env=worker_env)
        try:
            wait_until(self.healthy, timeout=timeout, what=f"Airflow at {self.url}", interval=1)
        except SandboxError as exc:
            raise SandboxError(f"{exc}; component logs in {self._processes.log_dir}") from exc

    def migrate(self, env: dict[str, str] | None = None) -> None:
        """``airflow db migrate``: creates the schema on first use, a quick no-op after."""
        env = env or self.environment()
        try:
            done = subprocess.run(self._airflow("db", "migrate"), env={**os.environ, **env},
                                  capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"airflow db migrate did not finish within {MIGRATE_TIMEOUT_S} s") from exc
        if done.returncode != 0:
            raise SandboxError(f"airflow db migrate failed (exit {done.returncode}): {done.stderr[-1500:]}")

    def _start_broker(self) -> None:
        start_process(self._processes, "celery-broker",
                      ["redis-server", "--bind", HOST, "--port", str(self.broker_port), "--save", "",
                       "--appendonly", "no", "--protected-mode", "yes"])
        wait_until(lambda: port_open(self.broker_port), timeout=30,
                   what=f"Celery broker on {HOST}:{self.broker_port}")

    def stop_worker(self, name: str, *, lost: bool = False) -> bool:
        """Stop one Celery worker (the others go on): by default a warm shutdown that lets its
        running tasks finish; ``lost`` kills it and its tasks at once, as a machine that dies."""
        if lost:
            return kill_process(self._processes, name)
        return stop_process(self._processes, name, timeout=30)

    def down(self) -> bool:
        """Stop every process this home started (whatever executor it was started with), workers
        first, then the components, the broker and the metadata database."""
        recorded = {p.stem for p in (self.home / "processes" / "pids").glob("*.pid")}
        order = [*sorted(recorded - {*COMPONENTS, "celery-broker"}), *reversed(COMPONENTS), "celery-broker"]
        stopped = False
        for name in order:
            if name in recorded:
                stopped |= stop_process(self._processes, name, timeout=30)
        return self.metadata.down() or stopped

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


def worker_hostname() -> str:
    """The hostname a task records: its Celery worker's name where several share one host."""
    import socket

    return os.environ.get("BISMAN_WORKER_HOSTNAME") or socket.getfqdn()


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
        tis: list[dict] = []
        while True:  # a page holds at most the API's maximum_page_limit (100), however many are asked
            page = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
                                     f"?limit=100&offset={len(tis)}")
            tis += page["task_instances"]
            if not page["task_instances"] or len(tis) >= page["total_entries"]:
                return tis

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
        """Wait until the task is in one of ``states``; fail at once when it ends in another (a
        task that failed or was skipped will not get there: waiting out the timeout hides why)."""
        def reached() -> bool:
            r = self.session.get(f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                                 timeout=TIMEOUT)
            return r.status_code == 200 and r.json().get("state") in (*states, *ENDED)

        wait_until(reached, timeout=timeout, what=f"{dag_id}.{task_id} in {states}", interval=2)
        state = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")["state"]
        if state not in states:
            raise SandboxError(f"{dag_id}.{task_id} ended {state}, not {states} (run {run_id})")
        return state

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[str]:
        """Clear tasks with their downstream tasks (and the setups of the teardowns among them), as
        the UI's "Clear" with "Downstream" does; returns the task ids cleared."""
        body = {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "include_downstream": True,
                "only_failed": False, "reset_dag_runs": True}
        cleared = self._call("POST", f"/dags/{dag_id}/clearTaskInstances", json=body)
        return sorted(ti["task_id"] for ti in cleared["task_instances"])

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
    sub.add_parser("db")
    trig = sub.add_parser("trigger")
    trig.add_argument("dag_id")
    trig.add_argument("--conf", default="{}")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SandboxError as exc:
        print(f"airflow_local {args.command} failed: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    af = AirflowLocal.from_env()
    if args.command == "up":
        from bisman_sandbox.launcher import airflow_connection_env

        started = time.monotonic()
        af.up(extra_env=airflow_connection_env())
        print(f"Airflow ({af.executor}, {', '.join((*COMPONENTS, *af.worker_names()))}) healthy in "
              f"{time.monotonic() - started:.0f} s; metadata on PostgreSQL at {HOST}:{af.metadata.port}")
        print(f"Airflow UI: {af.url}  (user {ADMIN_USER}, password in {af.password_file})")
    elif args.command == "db":
        af.metadata.up()
        af.migrate()
        print(f"Airflow's metadata database migrated, on PostgreSQL at {HOST}:{af.metadata.port}")
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
