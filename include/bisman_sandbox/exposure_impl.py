"""The sandbox's ``ServiceExposure`` for the post-deploy check "database not public": moto's RDS
flag says nothing about the local processes that stand for the database and Redis, so this reports
where they really listen (their sockets, read with psutil). The launcher registers it for Airflow:
``BISMAN_IMPL_SERVICE_EXPOSURE`` = ``IMPLEMENTATION`` below."""

from __future__ import annotations

IMPLEMENTATION = f"{__name__}:SandboxListenAddresses"
# The data services the check is about (the sandbox context's port names).
DATA_SERVICES = ("postgres_primary", "postgres_replica", "pgbouncer", "redis_primary", "redis_replica",
                 "redis_sentinel")


class SandboxListenAddresses:
    """Listening addresses of the sandbox's data services (or of ``ports``, ``{name: port}``)."""

    def __init__(self, ports: dict[str, int] | None = None):
        if ports is None:
            from bisman_sandbox.context import SandboxContext

            ctx = SandboxContext.from_env()
            ports = {name: ctx.port(name) for name in DATA_SERVICES}
        self.ports = dict(ports)

    def listen_addresses(self) -> dict[str, list[str]]:
        import psutil

        by_port = {port: name for name, port in self.ports.items()}
        found: dict[str, set[str]] = {name: set() for name in self.ports}
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in by_port:
                found[by_port[conn.laddr.port]].add(conn.laddr.ip)
        return {name: sorted(addresses) for name, addresses in found.items()}
