"""Bring the whole sandbox up or down, in dependency order.

    python -m bisman_sandbox up | down | status

``up`` is idempotent (a running service is left alone) and waits until each service is healthy;
``down`` stops every process the sandbox started, by the PIDs it recorded, also after a crash.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from types import ModuleType

from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError

# Start order: each service only needs those before it. Stopped in reverse.
SERVICE_MODULES = (
    "postgres",
    "pgbouncer",
    "redis",
    "sinks",
    "aws",
    "stripe_emulator",
    "monitoring",
    "grafana",
    "app_server",
    "tls_listener",
    "terraform_workspace",
)


def services() -> list[tuple[str, ModuleType]]:
    return [(name, importlib.import_module(f"bisman_sandbox.{name}")) for name in SERVICE_MODULES]


def up(ctx: SandboxContext, out=sys.stdout) -> dict[str, dict[str, str]]:
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    where: dict[str, dict[str, str]] = {}
    for name, module in services():
        started = time.monotonic()
        try:
            where[name] = module.up(ctx) or {}
        except SandboxError as exc:
            raise SandboxError(f"{name}: {exc}; logs in {ctx.log_dir}") from exc
        for label, location in where[name].items():
            print(f"  {name:<18} {label:<22} {location}", file=out)
        print(f"  {name:<18} ready in {time.monotonic() - started:.1f} s", file=out)
    ctx.path("connections.json").write_text(json.dumps(connections(ctx), indent=2))
    return where


def down(ctx: SandboxContext) -> None:
    errors = []
    for name, module in reversed(services()):
        try:
            module.down(ctx)
        except Exception as exc:  # keep stopping the others
            errors.append(f"{name}: {exc}")
    if errors:
        raise SandboxError("some services did not stop cleanly: " + "; ".join(errors))


def status(ctx: SandboxContext) -> dict[str, bool]:
    return {name: bool(module.healthy(ctx)) for name, module in services()}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    conns: dict[str, dict] = {}
    for _, module in services():
        conns.update(module.connections(ctx))
    return conns


def airflow_connection_env(ctx: SandboxContext | None = None) -> dict[str, str]:
    """The sandbox's connections as ``AIRFLOW_CONN_*`` variables, plus the settings the DAGs read."""
    ctx = ctx or SandboxContext.from_env()
    env = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections(ctx).items()}
    # Tasks that drive the sandbox itself (the replica drill) find it from these, whatever the
    # environment Airflow was started from.
    env["BISMAN_SANDBOX_DIR"] = str(ctx.state_dir)
    env.update({f"BISMAN_SANDBOX_PORT_{name.upper()}": str(port) for name, port in ctx.ports.items()})
    env["BISMAN_IMPL_SERVICE_EXPOSURE"] = "bisman_sandbox.exposure_impl:SandboxListenAddresses"
    for _, module in services():
        env.update(getattr(module, "settings", lambda _ctx: {})(ctx))
    return env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in ("up", "down", "status", "env"):
        print("usage: python -m bisman_sandbox up|down|status|env", file=sys.stderr)
        return 2
    ctx = SandboxContext.from_env()
    command = argv[0]
    try:
        if command == "up":
            started = time.monotonic()
            print(f"Sandbox state in {ctx.state_dir}")
            up(ctx)
            print(f"Sandbox up in {time.monotonic() - started:.1f} s")
        elif command == "down":
            down(ctx)
            print("Sandbox stopped")
        elif command == "status":
            health = status(ctx)
            for name, ok in health.items():
                print(f"  {name:<18} {'healthy' if ok else 'DOWN'}")
            return 0 if all(health.values()) else 1
        elif command == "env":
            for key, value in airflow_connection_env(ctx).items():
                print(f"export {key}={json.dumps(value)}")
    except SandboxError as exc:
        print(f"sandbox {command} failed: {exc}", file=sys.stderr)
        return 1
    return 0
