"""Airflow connection ids and settings the DAGs use. The sandbox launcher writes connections
with these ids (as ``AIRFLOW_CONN_*`` variables); in production they come from the secrets backend."""

from __future__ import annotations

AWS_CONN_ID = "aws_default"
APP_DB_CONN_ID = "bisman_app_db"  # read-write, through PgBouncer to the primary
APP_DB_PRIMARY_CONN_ID = "bisman_app_db_primary"  # direct to the primary (migrations, lag probes)
APP_DB_REPLICA_CONN_ID = "bisman_app_db_replica"  # direct to the read replica
PGBOUNCER_ADMIN_CONN_ID = "bisman_pgbouncer_admin"  # PgBouncer's admin console (database "pgbouncer")
REDIS_CONN_ID = "bisman_redis"  # extra: {"sentinels": [[host, port]], "master_name": ...}
APP_API_CONN_ID = "bisman_app_api"  # HTTP base URL of the application
STRIPE_CONN_ID = "bisman_stripe"  # host: API base URL; password: secret key
SMTP_CONN_ID = "smtp_default"
SLACK_CONN_ID = "bisman_slack_webhook"
PROMETHEUS_CONN_ID = "bisman_prometheus"
ALERTMANAGER_CONN_ID = "bisman_alertmanager"
GRAFANA_CONN_ID = "grafana_default"  # host: Grafana base URL; password: service-account token

TEAM_EMAIL_ENV = "BISMAN_TEAM_EMAIL"
DEFAULT_TEAM_EMAIL = "platform-team@bisman.example"
MAIL_FROM_ENV = "BISMAN_MAIL_FROM"
DEFAULT_MAIL_FROM = "bisman-ops@bisman.example"

# The deployment this Airflow runs for: one source for every DAG (not a form default).
PROJECT_NAME_ENV = "BISMAN_PROJECT_NAME"
ENVIRONMENT_ENV = "BISMAN_ENVIRONMENT"
DEFAULT_PROJECT_NAME = "bisman-erp"


def project_name(requested: str | None = None, environ: dict | None = None) -> str:
    """The project this deployment runs for, the one source every DAG's resource names come from:
    ``BISMAN_PROJECT_NAME`` when it is set (it wins over any form value), else ``requested`` (the
    rollout's form, where no deployment is configured), else bisman-erp. A form naming another
    project than the configured one is refused by its validation (``project_name_mismatch``)."""
    import os

    env = os.environ if environ is None else environ
    configured = env.get(PROJECT_NAME_ENV, "").strip()
    return configured or (requested or "").strip() or DEFAULT_PROJECT_NAME


def project_name_mismatch(requested: str | None, environ: dict | None = None) -> str | None:
    """Why ``requested`` cannot be used: it differs from the configured ``BISMAN_PROJECT_NAME``
    (the message names both). None when it agrees, or when no project is configured."""
    import os

    env = os.environ if environ is None else environ
    configured = env.get(PROJECT_NAME_ENV, "").strip()
    if configured and requested and requested.strip() != configured:
        return (f"project_name={requested!r} differs from this deployment's {PROJECT_NAME_ENV}="
                f"{configured!r} (a run acts only on the project its Airflow is configured for)")
    return None


def deployment(environ: dict | None = None):
    """The ``ResourceNames`` of this deployment, from ``BISMAN_PROJECT_NAME`` (default bisman-erp)
    and ``BISMAN_ENVIRONMENT`` (required: a scheduled job must never guess staging or prod)."""
    import os

    from bisman_ops.naming import ENVIRONMENTS, ResourceNames

    env = os.environ if environ is None else environ
    environment = env.get(ENVIRONMENT_ENV, "").strip()
    if not environment:
        raise ValueError(f"{ENVIRONMENT_ENV} is not set; set it in the deployment to one of "
                         f"{', '.join(ENVIRONMENTS)} (the environment this Airflow operates)")
    return ResourceNames(project_name(environ=env), environment)
