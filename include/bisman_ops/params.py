"""Params (the trigger forms) shared by the DAGs. JSON-schema types, enums and patterns, so the
Airflow UI and REST API refuse a bad value before a run is even created."""

from __future__ import annotations

from airflow.sdk import Param

from bisman_ops.naming import ENVIRONMENTS

PROJECT_NAME_PATTERN = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
# An RDS/ECS-style identifier: letters, digits, hyphens; starts with a letter.
IDENTIFIER_PATTERN = r"^[a-zA-Z][a-zA-Z0-9-]{0,62}$"
DOMAIN_PATTERN = r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$"
GIT_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
TASK_DEFINITION_PATTERN = r"^(previous|[A-Za-z0-9_-]{1,255}:[0-9]{1,9})$"
SNAPSHOT_PATTERN = r"^(latest|[a-zA-Z][a-zA-Z0-9-:]{0,254})$"


def environment(description: str = "Which environment to act on.") -> Param:
    return Param("staging", type="string", enum=list(ENVIRONMENTS), title="Environment",
                 description=description)


def project_name() -> Param:
    """Defaults to the deployment's configured project (``config.project_name``): a form naming
    another one is refused by the rollout's validation."""
    from bisman_ops import config

    return Param(config.project_name(), type="string", pattern=PROJECT_NAME_PATTERN, title="Project name",
                 description="Prefix of every resource name (Terraform's project_name).")


def aws_region() -> Param:
    return Param("us-east-1", type="string", pattern=REGION_PATTERN, title="AWS region",
                 description="Where the environment runs (Terraform's aws_region).")


MAX_WAIT_SECONDS = 6 * 3600


def wait_seconds(default: int, title: str, description: str) -> Param:
    """How long a wait may take before its task fails: every wait has a bound, none shorter than 10 s
    nor longer than 6 h."""
    return Param(default, type="integer", minimum=10, maximum=MAX_WAIT_SECONDS, title=title,
                 description=description)


class SharedSchema(dict):
    """A Param's schema, shared by the deep copies Airflow makes of the DAG's params for every task it
    builds (four per task): with the rollout's form, copying the schemas made the DAG file's parse
    about 0.1 s slower in every task process. A schema is never changed once the DAG is defined; the
    value, which a run resolves, is still copied. (A Param subclass would not do: Airflow serializes
    only the Param class itself.)"""

    def __deepcopy__(self, memo: dict | None) -> SharedSchema:
        return self


def section(name: str, params: dict[str, Param]) -> dict[str, Param]:
    """The same params under one heading of the trigger form (the UI groups by ``section``)."""
    return {key: Param(p.value, p.description, schema=SharedSchema(p.schema, section=name))
            for key, p in params.items()}


def identifier(title: str, description: str, *, nullable: bool = True) -> Param:
    """An AWS identifier; left empty (null), it is derived from project_name and environment."""
    if nullable:
        return Param(None, type=["null", "string"], pattern=IDENTIFIER_PATTERN, title=title,
                     description=description)
    return Param(type="string", pattern=IDENTIFIER_PATTERN, title=title, description=description)


def reason() -> Param:
    return Param(type="string", minLength=10, maxLength=500, title="Reason",
                 description="Why this is being done: incident id and a sentence. Goes into every "
                             "notification and the report.")


def confirm(what: str) -> Param:
    return Param(type="string", minLength=1, title="Confirm",
                 description=f"Type {what} exactly to confirm. Nothing changes unless it matches.")


def terraform_dir(default: str = "infra/terraform") -> Param:
    return Param(default, type="string", minLength=1, title="Terraform directory",
                 description="Directory of the Terraform configuration (a git work tree for rollbacks).")
