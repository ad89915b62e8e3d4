"""The sandbox's ``ServiceRedeploy`` (``bisman_ops.rollout.billing.app_secret``) for phase 4.

moto's ECS records a forced deployment but runs no task, and the sandbox's application is a local
gunicorn: a redeploy restarts it, and it reads the application secret's Stripe values from moto at
start, as ECS resolves a task definition's ``secrets`` when a task starts (``deployed_secret``).
``app_server.settings`` registers it: ``BISMAN_IMPL_SERVICE_REDEPLOY`` = ``IMPLEMENTATION``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bisman_ops.rollout.billing.app_secret import EcsForceNewDeployment

IMPLEMENTATION = f"{__name__}:SandboxAppRedeploy"


def deployed_secret(ctx: Any, key: str, default: str) -> str:
    """``key`` of the application secret in moto, else ``default`` (moto not up yet, no secret)."""
    from bisman_ops.naming import ResourceNames
    from bisman_sandbox import aws
    from bisman_sandbox import context as sc

    try:
        raw = aws.client(ctx, "secretsmanager").get_secret_value(
            SecretId=ResourceNames(sc.PROJECT_NAME, sc.ENVIRONMENT).app_secret_name)["SecretString"]
        return json.loads(raw).get(key) or default
    except Exception:  # the first start comes before the seeding: the seed's own value then
        return default


@dataclass
class SandboxAppRedeploy(EcsForceNewDeployment):
    """The forced deployment recorded in moto, and the local application restarted."""

    name: str = "sandbox-app-restart"

    def redeploy(self, since: Any = None) -> dict[str, Any]:
        from bisman_sandbox import app_server
        from bisman_sandbox.context import SandboxContext

        done = super().redeploy(since)
        ctx = SandboxContext.from_env()
        if done["deployed"] or not app_server.healthy(ctx):  # followed: restarted already
            app_server.down(ctx)
            app_server.up(ctx)
        return {**done, "redeploy": self.name, "app": "restarted"}

    def rolled_out(self) -> tuple[bool, dict[str, Any]]:
        from bisman_sandbox import app_server
        from bisman_sandbox.context import SandboxContext

        healthy = app_server.healthy(SandboxContext.from_env())
        return healthy, {"service": self.service, "app_healthy": healthy}
