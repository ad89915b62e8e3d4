"""The sandbox's HTTPS endpoint for the API: ``tls_proxy`` on 127.0.0.1:<tls port> in front of the
application, with a certificate chain of a local CA (``local_ca``) for the sandbox's domain.

The post-deploy TLS check scans it as it would scan the API's public name: ``settings`` registers
``SandboxTlsEndpoint`` (``BISMAN_IMPL_TLS_ENDPOINT``), which names this address, the domain for SNI
and the local root as the trust anchor.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bisman_sandbox import context as sc
from bisman_sandbox import local_ca
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import is_running, port_open, start_process, stop_process, wait_until

NAME = "tls-listener"
START_TIMEOUT_S = 30


def cert_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "tls"


def names() -> tuple[str, ...]:
    from bisman_sandbox.aws import SANDBOX_DOMAIN

    return (SANDBOX_DOMAIN, "localhost", HOST)


def command(ctx: SandboxContext, port: int, profile: str = "intermediate") -> list[str]:
    return [sys.executable, "-m", "bisman_sandbox.tls_proxy", "--port", str(port),
            "--upstream-port", str(ctx.port("app")), "--cert-dir", str(cert_dir(ctx)), "--profile", profile]


def up(ctx: SandboxContext) -> dict[str, str]:
    local_ca.ensure(cert_dir(ctx), names())
    if not is_running(ctx, NAME):
        start_process(ctx, NAME, command(ctx, ctx.port("tls")), cwd=sc.PROJECT_ROOT)
    wait_until(lambda: port_open(ctx.port("tls")), timeout=START_TIMEOUT_S,
               what=f"the TLS listener on {HOST}:{ctx.port('tls')}")
    return {"https": f"https://{HOST}:{ctx.port('tls')} ({names()[0]}, root {cert_dir(ctx) / 'root.pem'})"}


def down(ctx: SandboxContext) -> None:
    stop_process(ctx, NAME, timeout=10)


def healthy(ctx: SandboxContext) -> bool:
    return is_running(ctx, NAME) and port_open(ctx.port("tls"))


def settings(ctx: SandboxContext) -> dict[str, str]:
    from bisman_ops.extension import env_var

    return {env_var("tls_endpoint"): f"{__name__}:SandboxTlsEndpoint"}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {}


@dataclass
class SandboxTlsEndpoint:
    """Where the post-deploy TLS check connects in the sandbox: the listener, with the domain as
    SNI and the local root as the trust anchor (the AWS default is ``domain:443``, public roots)."""

    def address(self, domain_name: str) -> dict:
        ctx = SandboxContext.from_env()
        return {"host": HOST, "port": ctx.port("tls"), "server_name": domain_name,
                "ca_file": str(cert_dir(ctx) / "root.pem")}
