"""The sandbox's Grafana: the API stand-in (``grafana_standin``), started and stopped like every
service, and the ``grafana_default`` connection the rollout imports dashboards through."""

from __future__ import annotations

import sys

import requests

from bisman_ops import config
from bisman_sandbox import sinks
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import is_running, start_process, stop_process, wait_until

PROCESS = "grafana"
# A service-account token for the stand-in only; not a secret of any real Grafana.
TOKEN = "glsa_sandbox_standin_token_not_secret"
HTTP_TIMEOUT = 5.0


def up(ctx: SandboxContext) -> dict[str, str]:
    if not is_running(ctx, PROCESS):
        start_process(ctx, PROCESS, [
            sys.executable, "-m", "bisman_sandbox.grafana_standin", "--port", str(ctx.port("grafana")),
            "--token", TOKEN, "--state", str(ctx.path("grafana", "state.json")),
        ], env={"PYTHONPATH": sinks._pythonpath()})
    wait_until(lambda: healthy(ctx), timeout=20.0, what=f"Grafana API stand-in at {ctx.url('grafana')}")
    return {"grafana (stand-in)": f"{ctx.url('grafana')} (API subset only, nothing rendered)"}


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, PROCESS)


def healthy(ctx: SandboxContext) -> bool:
    if not is_running(ctx, PROCESS):
        return False
    try:
        return requests.get(f"{ctx.url('grafana')}/api/health", timeout=HTTP_TIMEOUT).status_code == 200
    except requests.RequestException:
        return False


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {config.GRAFANA_CONN_ID: {"conn_type": "http", "host": f"http://{HOST}",
                                     "port": ctx.port("grafana"),
                                     "password": TOKEN}}


def settings(ctx: SandboxContext) -> dict[str, str]:
    """The sandbox's plug-ins for the monitoring phase (see bisman_ops.rollout.monitoring)."""
    return {
        "BISMAN_IMPL_RULE_DELIVERY": "bisman_sandbox.monitoring_impl:SandboxRuleDelivery",
        "BISMAN_IMPL_ALERT_FAULT": "bisman_sandbox.monitoring_impl:SandboxAppFault",
        "BISMAN_IMPL_ALERT_INBOX": "bisman_sandbox.monitoring_impl:SandboxInbox",
    }
