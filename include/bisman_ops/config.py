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

TEAM_EMAIL_ENV = "BISMAN_TEAM_EMAIL"
DEFAULT_TEAM_EMAIL = "platform-team@bisman.example"
MAIL_FROM_ENV = "BISMAN_MAIL_FROM"
DEFAULT_MAIL_FROM = "bisman-ops@bisman.example"
