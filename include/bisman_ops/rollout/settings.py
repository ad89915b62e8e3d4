"""The rollout's inputs, validated in one place before anything is touched.

``RolloutSettings.from_params`` takes the DAG run's params (the trigger form) and either returns
settings every task can rely on or raises CheckFailed listing every bad value at once. The settings
travel from ``rollout_params_valid`` to every later task as an XCom (``as_dict``/``from_dict``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bisman_ops import config
from bisman_ops import params as form
from bisman_ops.change.errors import CheckFailed
from bisman_ops.naming import ENVIRONMENTS, ResourceNames

DEFAULT_LAG_THRESHOLD_S = 1.0
DEFAULT_LAG_TIMEOUT_S = 600
DEFAULT_CERTIFICATE_TIMEOUT_S = 1800
IMAGE_PATTERN = r"^[^:@\s]+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"
TFVARS_KEYS = (
    "project_name",
    "environment",
    "aws_region",
    "db_instance_class",
    "redis_node_type",
    "app_image",
    "domain_name",
)


@dataclass(frozen=True)
class RolloutSettings:
    environment: str
    project_name: str
    aws_region: str
    db_instance_class: str
    redis_node_type: str
    app_image: str
    domain_name: str
    terraform_dir: str
    create_state_backend: bool = False
    generate_missing_secrets: bool = False
    replica_failure_drill: bool = True
    replica_lag_threshold_s: float = DEFAULT_LAG_THRESHOLD_S
    replica_lag_timeout_s: int = DEFAULT_LAG_TIMEOUT_S
    certificate_timeout_s: int = DEFAULT_CERTIFICATE_TIMEOUT_S

    @property
    def names(self) -> ResourceNames:
        return ResourceNames(self.project_name, self.environment)

    def tfvars(self) -> dict[str, str]:
        """The variables CONTRACT.md says the rollout writes to terraform.tfvars."""
        return {key: getattr(self, key) for key in TFVARS_KEYS}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RolloutSettings:
        """Settings ``rollout_params_valid`` already validated (its XCom)."""
        return cls(**values)

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> RolloutSettings:
        problems: list[str] = []

        def text(key: str, pattern: str | None, what: str) -> str:
            value = p.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"{key} is missing")
                return ""
            if pattern and not re.match(pattern, value):
                problems.append(f"{key}={value!r} is not {what}")
            return value

        environment = p.get("environment")
        if environment not in ENVIRONMENTS:
            problems.append(
                f"unknown environment {environment!r} (expected one of {', '.join(ENVIRONMENTS)})"
            )
        project_name = text("project_name", form.PROJECT_NAME_PATTERN, "a project name (a-z, 0-9, -)")
        if project_name and (mismatch := config.project_name_mismatch(project_name)):
            problems.append(mismatch)  # the lock, the report and the rollbacks use the configured one
        aws_region = text("aws_region", form.REGION_PATTERN, "an AWS region")
        db_class = text("db_instance_class", r"^db\.[a-z0-9]+\.[a-z0-9]+$", "an RDS instance class")
        redis_type = text("redis_node_type", r"^cache\.[a-z0-9]+\.[a-z0-9]+$", "an ElastiCache node type")
        app_image = text("app_image", IMAGE_PATTERN, "an image with a tag or digest")
        domain = text("domain_name", form.DOMAIN_PATTERN, "a lowercase DNS name such as api.example.com")
        terraform_dir = text("terraform_dir", None, "")
        if terraform_dir:
            d = Path(terraform_dir)
            if not d.is_dir():
                problems.append(f"terraform_dir {terraform_dir} is not a directory on this worker")
            elif not (any(d.glob("*.tf")) or any(d.glob("*.tf.json"))):
                problems.append(f"terraform_dir {terraform_dir} holds no Terraform configuration (*.tf)")

        drill = p.get("replica_failure_drill")
        if drill is None:
            drill = environment != "prod"  # drills on by default in staging only
        threshold = _number(p, "replica_lag_threshold_seconds", DEFAULT_LAG_THRESHOLD_S, problems)
        lag_timeout = _number(p, "replica_lag_timeout_seconds", DEFAULT_LAG_TIMEOUT_S, problems)
        cert_timeout = _number(p, "certificate_timeout_seconds", DEFAULT_CERTIFICATE_TIMEOUT_S, problems)
        requests, concurrency = p.get("perf_requests"), p.get("perf_concurrency")
        if isinstance(requests, int) and isinstance(concurrency, int) and requests < concurrency:
            # hey sends perf_requests // perf_concurrency per worker: none at all below one each.
            problems.append(f"perf_requests={requests} is fewer than perf_concurrency={concurrency}")
        if problems:
            raise CheckFailed(
                "rollout parameters", "; ".join(problems), "valid values for every field of the form",
                "Trigger again with corrected values; nothing was changed", {"problems": problems},
            )
        return cls(
            environment=str(environment),
            project_name=project_name,
            aws_region=aws_region,
            db_instance_class=db_class,
            redis_node_type=redis_type,
            app_image=app_image,
            domain_name=domain,
            terraform_dir=str(Path(terraform_dir).resolve()),
            create_state_backend=bool(p.get("create_state_backend", False)),
            generate_missing_secrets=bool(p.get("generate_missing_secrets", False)),
            replica_failure_drill=bool(drill),
            replica_lag_threshold_s=float(threshold),
            replica_lag_timeout_s=int(lag_timeout),
            certificate_timeout_s=int(cert_timeout),
        )


def _number(p: dict, key: str, default: float, problems: list[str]) -> float:
    value = p.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        problems.append(f"{key}={value!r} must be a positive number")
        return default
    return value
