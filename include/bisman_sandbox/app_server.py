"""The sandbox application (``bisman_sandbox.app``) under gunicorn on 127.0.0.1:<app port>.

Its settings are environment variables computed here from the sandbox context, the way ECS
passes them to the real task: PgBouncer pools, Sentinel, secrets, the moto endpoint and log group.
Needs postgres/pgbouncer, redis (with Sentinel) and moto up first.
"""

from __future__ import annotations

import os
import shutil
import sys

import requests

from bisman_ops import config
from bisman_ops.naming import ResourceNames
from bisman_sandbox import aws as sandbox_aws
from bisman_sandbox import context as sc
from bisman_sandbox import redis as sandbox_redis
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    read_pid,
    start_process,
    stop_process,
    wait_until,
)

NAME = "app"
WORKERS = 3
READ_ONLY_DATABASE = f"{sc.DB_NAME}_ro"  # PgBouncer's pool on the replica
START_TIMEOUT_SECONDS = 45


def base_url(ctx: SandboxContext) -> str:
    return ctx.url("app")


def routing_log_file(ctx: SandboxContext):
    return ctx.path("app", "routing.log")


def fault_file(ctx: SandboxContext):
    """While this file exists the application answers 500 to API requests (the alert drill)."""
    return ctx.state_dir / "app" / "fault"


def latency_file(ctx: SandboxContext):
    """While this file exists every request waits the milliseconds it holds (a slower build, for
    the performance baseline's regression test)."""
    return ctx.state_dir / "app" / "latency_ms"


def log_group() -> str:
    return ResourceNames(sc.PROJECT_NAME, sc.ENVIRONMENT).app_log_group


def app_environment(ctx: SandboxContext) -> dict[str, str]:
    """Every setting the application reads (see app/settings.py)."""
    from bisman_sandbox.billing_impl import deployed_secret

    pgbouncer = f"{HOST}:{ctx.port('pgbouncer')}"
    credentials = f"{sc.DB_USER}:{sc.DB_PASSWORD}"
    env = {
        "DATABASE_URL": f"postgresql://{credentials}@{pgbouncer}/{sc.DB_NAME}",
        "DATABASE_URL_REPLICA": f"postgresql://{credentials}@{pgbouncer}/{READ_ONLY_DATABASE}",
        "REDIS_SENTINELS": f"{HOST}:{ctx.port('redis_sentinel')}",
        "REDIS_MASTER_NAME": sc.REDIS_MASTER_NAME,
        "REDIS_PASSWORD": sandbox_redis.REDIS_PASSWORD,
        "JWT_SECRET": sc.JWT_SECRET,
        # As ECS at task start: the application secret's current value (the rollout may replace it).
        "STRIPE_WEBHOOK_SECRET": deployed_secret(ctx, "STRIPE_WEBHOOK_SECRET", sc.STRIPE_WEBHOOK_SECRET),
        "AWS_ENDPOINT_URL": ctx.url("moto"),
        "AWS_DEFAULT_REGION": sc.AWS_REGION,
        "AWS_ACCESS_KEY_ID": sandbox_aws.FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": sandbox_aws.FAKE_SECRET_ACCESS_KEY,
        "APP_LOG_GROUP": log_group(),
        "ROUTING_LOG_FILE": str(routing_log_file(ctx)),
        "METRICS_DIR": str(ctx.state_dir / "app" / "metrics"),
        "FAULT_FILE": str(fault_file(ctx)),
        "LATENCY_FILE": str(latency_file(ctx)),
        "USAGE_METER_ENABLED": os.environ.get("USAGE_METER_ENABLED", "true"),
        "QUOTA_ENFORCEMENT_ENABLED": os.environ.get("QUOTA_ENFORCEMENT_ENABLED", "true"),
        "APP_BIND": f"{HOST}:{ctx.port('app')}",
        "APP_WORKERS": str(WORKERS),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(sc.PROJECT_ROOT / "include"), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    return env


def up(ctx: SandboxContext) -> dict[str, str]:
    if not is_running(ctx, NAME):
        metrics_dir = ctx.state_dir / "app" / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # counters start from zero with a new master
        metrics_dir.mkdir(parents=True, exist_ok=True)
        start_process(
            ctx,
            NAME,
            [
                sys.executable, "-m", "gunicorn",
                "--config", "python:bisman_sandbox.app.gunicorn_conf",
                "bisman_sandbox.app:create_app()",
            ],
            env=app_environment(ctx),
            cwd=sc.PROJECT_ROOT,
        )
    try:
        wait_until(lambda: _health_status(ctx) == 200 and len(worker_pids(ctx)) >= WORKERS,
                   timeout=START_TIMEOUT_SECONDS,
                   what=f"sandbox app GET {base_url(ctx)}/health with {WORKERS} workers")
    except SandboxError as exc:
        raise SandboxError(
            f"{exc}; last answer: {_health_detail(ctx)}; see {ctx.log_dir / (NAME + '.log')} "
            "(is PgBouncer, Redis Sentinel and moto up?)"
        ) from exc
    return {"app": base_url(ctx), "app routing log": str(routing_log_file(ctx))}


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, NAME, timeout=15)


def healthy(ctx: SandboxContext) -> bool:
    return _health_status(ctx) == 200


def settings(ctx: SandboxContext) -> dict[str, str]:
    """Phase 4's redeploy restarts this server (bisman_sandbox.billing_impl); phase 7's task-killed
    drill kills one of its workers (bisman_sandbox.chaos_impl)."""
    from bisman_ops.extension import env_var
    from bisman_sandbox.billing_impl import IMPLEMENTATION

    return {env_var("service_redeploy"): IMPLEMENTATION,
            env_var("app_task_kill"): "bisman_sandbox.chaos_impl:SandboxAppTaskKill"}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {
        config.APP_API_CONN_ID: {
            "conn_type": "http",
            "host": f"http://{HOST}",
            "port": ctx.port("app"),
        }
    }


def master_pid(ctx: SandboxContext) -> int | None:
    return read_pid(ctx, NAME) if is_running(ctx, NAME) else None


def worker_pids(ctx: SandboxContext) -> list[int]:
    """PIDs of gunicorn's live workers: the master's children, read from /proc."""
    master = master_pid(ctx)
    if master is None:
        return []
    workers = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # Fields after the parenthesised command: state, ppid, ...
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if int(ppid) == master and state != "Z":
            workers.append(int(entry))
    return sorted(workers)


def _health_status(ctx: SandboxContext) -> int | None:
    try:
        return requests.get(f"{base_url(ctx)}/health", timeout=5).status_code
    except requests.RequestException:
        return None


def _health_detail(ctx: SandboxContext) -> str:
    try:
        response = requests.get(f"{base_url(ctx)}/health", timeout=5)
    except requests.RequestException as exc:
        return f"no answer ({type(exc).__name__})"
    return f"HTTP {response.status_code} {response.text.strip()[:300]}"
