"""
### BISMAN ERP production rollout

The production rollout checklist as one DAG, one task group per phase: preflight, core
infrastructure, read replica, usage metering and quotas, billing, scheduled jobs, monitoring,
chaos, post-deploy. Each group ends with a gate; a failed gate stops every later phase.

**Trigger** it from the UI with the form (environment, project name, region, sizes, image, domain,
Terraform directory, drills). **Approve** the Terraform plan when the run waits for you.

**Resume** after a failure: fix the cause named in the failed task's log, then clear that task
(with downstream) — every task is idempotent.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, TaskGroup, chain

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE, not_built

DAG_ID = "bisman_rollout"
ISSUE = "rollout phases are being built"

PHASES = (
    "preflight",
    "core_infrastructure",
    "read_replica",
    "usage_metering",
    "billing",
    "scheduled_jobs",
    "monitoring",
    "chaos",
    "post_deploy",
)

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollout"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "project_name": params.project_name(),
        "aws_region": params.aws_region(),
        "db_instance_class": Param("db.r6g.large", type="string", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$",
                                   title="RDS instance class"),
        "redis_node_type": Param("cache.r6g.large", type="string",
                                 pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$", title="Redis node type"),
        "app_image": Param("bisman-erp:latest", type="string", minLength=3, title="Application image"),
        "domain_name": Param("api.staging.bisman.test", type="string", pattern=params.DOMAIN_PATTERN,
                             title="API domain name"),
        "terraform_dir": params.terraform_dir(),
    },
) as dag:
    groups = []
    for phase in PHASES:
        with TaskGroup(group_id=phase) as group:
            not_built(f"{phase}_gate", ISSUE)
        groups.append(group)
    chain(*groups)
