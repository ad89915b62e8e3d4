"""Resource names, derived from project_name and environment the way the Terraform configuration
names them. One place, so the DAGs, the sandbox and the rollbacks agree."""

from __future__ import annotations

import re
from dataclasses import dataclass

ENVIRONMENTS = ("staging", "prod")
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$")


@dataclass(frozen=True)
class ResourceNames:
    project_name: str
    environment: str

    def __post_init__(self) -> None:
        if self.environment not in ENVIRONMENTS:
            raise ValueError(
                f"unknown environment {self.environment!r}; expected one of {', '.join(ENVIRONMENTS)}"
            )
        if not _PROJECT_RE.match(self.project_name):
            raise ValueError(
                f"malformed project_name {self.project_name!r}; expected lowercase letters, digits "
                "and hyphens, 3-32 characters, starting with a letter"
            )

    @property
    def prefix(self) -> str:
        return f"{self.project_name}-{self.environment}"

    @property
    def db_instance_identifier(self) -> str:
        return f"{self.prefix}-db"

    @property
    def db_replica_identifier(self) -> str:
        return f"{self.prefix}-replica"

    @property
    def db_name(self) -> str:
        return f"{self.project_name.split('-')[0]}_{self.environment}"

    @property
    def redis_replication_group_id(self) -> str:
        return f"{self.prefix}-redis"

    @property
    def ecs_cluster_name(self) -> str:
        return self.prefix

    @property
    def ecs_service_name(self) -> str:
        return self.prefix

    @property
    def app_task_family(self) -> str:
        return f"{self.prefix}-app"

    @property
    def app_log_group(self) -> str:
        return f"/aws/ecs/{self.prefix}/app"

    @property
    def app_secret_name(self) -> str:
        return f"{self.project_name}/{self.environment}/app-secrets"

    @property
    def state_bucket(self) -> str:
        return f"{self.prefix}-terraform-state"

    @property
    def lock_table(self) -> str:
        return f"{self.prefix}-terraform-locks"

    @property
    def alb_name(self) -> str:
        return f"{self.prefix}-alb"

    @property
    def waf_web_acl_name(self) -> str:
        return f"{self.prefix}-waf"

    @property
    def db_security_group_name(self) -> str:
        return f"{self.prefix}-db-sg"

    @property
    def redis_security_group_name(self) -> str:
        return f"{self.prefix}-redis-sg"

    @property
    def app_security_group_name(self) -> str:
        return f"{self.prefix}-app-sg"

    @property
    def reports_prefix(self) -> str:
        """S3 key prefix (in the state bucket) for run reports."""
        return f"reports/{self.environment}"
