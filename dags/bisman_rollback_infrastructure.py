"""
### Roll back the infrastructure (Terraform revert)

Runbook: apply an earlier git revision of the Terraform configuration.

1. Fill the form: environment, `git_ref` (empty: the commit before the current one of the
   Terraform directory), the Terraform directory, the reason.
2. Type the environment name in **confirm**.
3. The DAG checks that revision out into a clean work directory (never in place), plans, shows the
   summary (destroys of stateful resources first) for approval, applies exactly that plan and
   verifies health.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE, not_built

DAG_ID = "bisman_rollback_infrastructure"
ISSUE = "issue: manual rollback DAGs"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "git_ref": Param(None, type=["null", "string"], pattern=params.GIT_REF_PATTERN, title="Git ref",
                         description="Commit, tag or branch. Empty: the commit before the current one."),
        "terraform_dir": params.terraform_dir(),
        "reason": params.reason(),
        "confirm": params.confirm("the environment name"),
    },
) as dag:
    chain(not_built("validate_request", ISSUE), not_built("apply_reverted_plan", ISSUE))
