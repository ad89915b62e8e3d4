"""Where the sandbox lives: its state folder and the port of each service.

Every service binds 127.0.0.1 only. Ports default to values away from the usual ones
(5432, 6379, 9090, ...) so a sandbox can run beside a developer's own services, and each
can be moved with ``BISMAN_SANDBOX_PORT_<NAME>``; ``BISMAN_SANDBOX_PORT_OFFSET`` shifts them
all at once, which lets two sandboxes (say, two test runs) live side by side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

DEFAULT_PORTS: dict[str, int] = {
    "postgres_primary": 15432,
    "postgres_replica": 15433,
    "pgbouncer": 16432,
    "redis_primary": 16379,
    "redis_replica": 16380,
    "redis_sentinel": 26479,
    "moto": 15000,
    "stripe": 18420,
    "smtp": 11025,
    "slack": 18025,
    "prometheus": 19090,
    "alertmanager": 19093,
    "app": 18000,
    "grafana": 19300,  # the Grafana API stand-in; clear of every other port at offsets 0 and 2000
    "tls": 18443,  # the API's HTTPS listener (the load balancer's, in front of the app)
}

# Names the sandbox gives its resources, the way Terraform would for project_name/environment.
PROJECT_NAME = "bisman-erp"
ENVIRONMENT = "staging"
AWS_REGION = "us-east-1"
DB_NAME = "bisman_staging"
DB_USER = "bisman_app"
DB_PASSWORD = "sandbox-db-password-not-secret"
REDIS_MASTER_NAME = "bisman-erp-staging-redis"
STRIPE_WEBHOOK_SECRET = "whsec_sandbox_not_secret"
STRIPE_SECRET_KEY = "sk_test_sandbox_not_secret"
JWT_SECRET = "sandbox-jwt-secret-0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class SandboxContext:
    """Paths and ports of one sandbox instance."""

    state_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: os._Environ | dict | None = None) -> SandboxContext:
        env = os.environ if environ is None else environ
        state_dir = Path(env.get("BISMAN_SANDBOX_DIR", PROJECT_ROOT / ".sandbox")).resolve()
        offset = int(env.get("BISMAN_SANDBOX_PORT_OFFSET", "0"))
        ports = {}
        for name, default in DEFAULT_PORTS.items():
            override = env.get(f"BISMAN_SANDBOX_PORT_{name.upper()}")
            ports[name] = int(override) if override else default + offset
        return cls(state_dir=state_dir, ports=ports)

    def port(self, name: str) -> int:
        return self.ports[name]

    def url(self, name: str, scheme: str = "http") -> str:
        return f"{scheme}://{HOST}:{self.ports[name]}"

    def path(self, *parts: str) -> Path:
        """A path inside the state folder, its parent created."""
        p = self.state_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def log_dir(self) -> Path:
        d = self.state_dir / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d
