"""The application secret's Stripe keys, merged in one new version, and the application redeployed
to read them.

Secrets Manager keeps the version it replaces as ``AWSPREVIOUS``: the application rollback (and an
operator) can go back to it. A merge keeps every other key as it is. ECS reads a task's secrets when
the task starts, so a changed value reaches the application only through a new deployment
(``ServiceRedeploy``; a deployment whose application is not an ECS service registers its own through
``bisman_ops.extension``: ``BISMAN_IMPL_SERVICE_REDEPLOY``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bisman_ops.change.errors import CheckFailed

REDEPLOY_EXTENSION = "service_redeploy"


def last_changed(sm: Any, secret_id: str) -> datetime | None:
    """When the secret last changed (Secrets Manager's LastChangedDate, to the second), its value
    not read."""
    found = sm.describe_secret(SecretId=secret_id)
    return found.get("LastChangedDate") or found.get("CreatedDate")


def read(sm: Any, secret_id: str) -> tuple[dict[str, str], str]:
    """The secret's current JSON object and its version id; its values masked in the logs from here
    on (the price and endpoint ids excepted)."""
    from bisman_ops.change.redact import mask_in_logs
    from bisman_ops.rollout.preflight import mask_app_secret

    got = sm.get_secret_value(SecretId=secret_id)
    mask_in_logs(got["SecretString"])  # before parsing: whatever the parser's error might show
    values = json.loads(got["SecretString"])
    if not isinstance(values, dict):
        raise CheckFailed(f"secret {secret_id}", "not a JSON object", "a JSON object of KEY: value",
                          "Fix its format, then clear this task")
    mask_app_secret(values)
    return values, got["VersionId"]


def version_token(run_id: str, merged: dict[str, str]) -> str:
    """The same run writing the same content reuses one version (a retried task adds none)."""
    digest = hashlib.sha256(json.dumps(merged, sort_keys=True).encode()).hexdigest()
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bisman-rollout:{run_id}:{digest}"))


def merge(sm: Any, secret_id: str, updates: dict[str, str], run_id: str) -> dict[str, Any]:
    """Put ``updates`` into the secret (other keys kept) as one new version; key names only in the
    result. ``previous_version`` is the version that became ``AWSPREVIOUS``."""
    from airflow.sdk.log import mask_secret

    for value in updates.values():
        mask_secret(value)
    values, version = read(sm, secret_id)
    changed = sorted(k for k, v in updates.items() if values.get(k) != v)
    if not changed:
        return {"secret": secret_id, "changed_keys": [], "version": version, "previous_version": None,
                "kept_keys": len(values)}
    merged = {**values, **updates}
    token = version_token(run_id, merged)
    put = sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(merged), ClientRequestToken=token)
    after, new_version = read(sm, secret_id)
    stages = sm.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
    lost = sorted(set(values) - set(after))
    previous_ok = "AWSPREVIOUS" in stages.get(version, [])
    measured = {"secret": secret_id, "changed_keys": changed, "version": put.get("VersionId", new_version),
                "previous_version": version, "previous_is_awsprevious": previous_ok,
                "kept_keys": len(set(values) & set(after)), "keys_lost": lost}
    if lost or not previous_ok:
        raise CheckFailed(f"merge of {', '.join(changed)} into {secret_id}",
                          f"keys lost {lost}" if lost else f"version {version} not staged AWSPREVIOUS",
                          "every other key kept and the replaced version staged AWSPREVIOUS",
                          "Restore the previous version (update-secret-version-stage) and check who else "
                          "writes the secret, then clear this task", measured)
    return measured


# -- redeploy -----------------------------------------------------------------------------------------


class ServiceRedeploy(Protocol):
    """Starts the application's tasks afresh (so they read the secret again) and says when the new
    ones serve. Constructed with an ECS client, the cluster and the service."""

    name: str

    def redeploy(self, since: datetime | None = None) -> dict[str, Any]: ...

    def rolled_out(self) -> tuple[bool, dict[str, Any]]: ...


@dataclass
class EcsForceNewDeployment:
    """AWS: ``UpdateService(forceNewDeployment)``; rolled out when the service has a single deployment,
    COMPLETED (when ECS reports rollout states) with all its tasks running.

    Idempotent as the application rollback is: a deployment created since ``since`` (the secret's
    last change: an earlier try's, or botocore's retry of a call that reached ECS) is followed, not
    forced again; a FAILED one (the circuit breaker) fails the wait at once."""

    ecs: Any
    cluster: str
    service: str
    name: str = "ecs-force-new-deployment"

    def _service(self) -> dict[str, Any]:
        return self.ecs.describe_services(cluster=self.cluster, services=[self.service])["services"][0]

    def redeploy(self, since: datetime | None = None) -> dict[str, Any]:
        primary = _primary(self._service())
        created = primary.get("createdAt")
        if since is not None and isinstance(created, datetime) and created >= since \
                and primary.get("rolloutState") != "FAILED":
            return {"redeploy": self.name, "service": self.service, "deployment": primary.get("id"),
                    "deployed": False}
        svc = self.ecs.update_service(cluster=self.cluster, service=self.service,
                                      forceNewDeployment=True)["service"]
        return {"redeploy": self.name, "service": self.service, "deployment": _primary(svc).get("id"),
                "deployed": True}

    def rolled_out(self) -> tuple[bool, dict[str, Any]]:
        svc = self._service()
        deployments = svc.get("deployments", [])
        primary = _primary(svc)
        measured = {"service": self.service, "deployments": len(deployments),
                    "rollout_state": primary.get("rolloutState"), "running": primary.get("runningCount"),
                    "desired": primary.get("desiredCount")}
        if primary.get("rolloutState") == "FAILED":
            raise CheckFailed(f"deployment {primary.get('id')} of {self.service}",
                              f"FAILED: {primary.get('rolloutStateReason', '')}", "COMPLETED",
                              "check the service's events and stopped tasks' reasons; the application "
                              "secret is already written: fix the cause, then clear app_redeployed", measured)
        done = (len(deployments) == 1 and primary.get("rolloutState", "COMPLETED") == "COMPLETED"
                and primary.get("runningCount") == primary.get("desiredCount"))
        return done, measured


def _primary(svc: dict[str, Any]) -> dict[str, Any]:
    return next((d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), {})


def service_redeploy(ecs: Any, cluster: str, service: str, environ: dict | None = None) -> ServiceRedeploy:
    from bisman_ops import extension

    return extension.load(REDEPLOY_EXTENSION, EcsForceNewDeployment, environ)(ecs, cluster, service)
