"""
### BISMAN ERP production rollout

The production rollout checklist as one DAG, one task group per phase: preflight, core
infrastructure, read replica, usage metering and quotas, billing, scheduled jobs, monitoring,
chaos, post-deploy. Each group ends with a gate; a failed gate stops every later phase and
notifies the team by email and Slack with what failed, the value measured and what to do.

**Trigger** it from the UI with the form (environment, project name, region, sizes, image, domain,
Terraform directory, switches). Bad values fail in `preflight` before anything changes.

**Approve** the Terraform plan when `core_infrastructure.approve_plan` waits for you (Required
actions): its text lists the plan's adds, changes and destroys, any database or Redis destroyed or
replaced first, and the plan file's SHA-256. Approve applies exactly that file; Reject stops the
rollout with nothing applied. A plan without changes skips approval and apply.

**Change lock**: `acquire_change_lock` takes the environment's lock (DynamoDB, with a lease the
steps renew) and `release_change_lock` gives it back whatever happens; a second rollout or a
rollback of the same environment fails on it without touching anything. If a worker died, the
lease expires on its own (3 h).

**Run report**: `write_run_report` always runs last; it writes JSON and Markdown to
`s3://<project>-<env>-terraform-state/reports/<env>/bisman_rollout/<run>` and into its log:
outputs, gate measurements, the approval (who, when, what was shown), timings, where it stopped.

**Resume** after a failure: fix the cause named in the failed task's log (and the notification),
then clear that task with its downstream tasks. Every task is idempotent: the lock is re-acquired
by the same run, a plan already applied is not applied again, checks just measure again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, TaskGroup, chain

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE, not_built
from bisman_ops.notifiers import TeamNotifier
from bisman_ops.rollout.steps import approval, branch, step, wait_for

DAG_ID = "bisman_rollout"
ISSUE = "rollout phases are being built"
BUILT = ("preflight", "core_infrastructure", "read_replica")
NOT_BUILT_YET = ("usage_metering", "billing", "scheduled_jobs", "monitoring", "chaos", "post_deploy")
APPROVAL_TIMEOUT = timedelta(hours=4)

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={**CHANGE_ARGS, "on_failure_callback": [TeamNotifier()]},
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
        "create_state_backend": Param(False, type="boolean", title="Create the state backend",
                                      description="Create the Terraform state bucket and lock table if "
                                                  "missing (otherwise preflight fails on them)."),
        "generate_missing_secrets": Param(False, type="boolean", title="Generate missing secrets",
                                          description="Generate JWT_SECRET, DB_PASSWORD and REDIS_PASSWORD "
                                                      "in Secrets Manager when missing."),
        "replica_failure_drill": Param(None, type=["null", "boolean"], title="Replica-failure drill",
                                       description="Take the read replica down and check the fallback. "
                                                   "Empty: on for staging, off for prod."),
        "replica_lag_threshold_seconds": Param(1.0, type="number", exclusiveMinimum=0,
                                               title="Replica lag threshold (s)"),
        "replica_lag_timeout_seconds": Param(600, type="integer", minimum=10, title="Replica lag timeout (s)",
                                             description="How long the lag gates wait before failing."),
        "certificate_timeout_seconds": Param(1800, type="integer", minimum=10,
                                             title="Certificate wait (s)",
                                             description="How long to wait for the ACM certificate to be "
                                                         "ISSUED."),
    },
) as dag:
    begin_report = step("begin_run_report")
    write_report = step("write_run_report")

    with TaskGroup(group_id="preflight") as preflight:
        valid = step("rollout_params_valid")
        checks = [
            step("aws_identity_and_permissions"),
            step("terraform_version_supported"),
            step("state_backend_checked"),
            step("app_secrets_valid"),
            step("domain_resolves_or_delegated"),
            wait_for("certificate_issued", timeout_param="certificate_timeout_seconds",
                     poke_interval=timedelta(seconds=30)),
        ]
        # Changes only after every read-only check passed: the backend, then the lock, then secrets.
        backend_ready = step("state_backend_ready")
        acquire_lock = step("acquire_change_lock")
        chain(valid, checks, backend_ready, acquire_lock, step("missing_secrets_generated"),
              step("preflight_gate"))

    with TaskGroup(group_id="core_infrastructure") as core_infrastructure:
        plan = step("terraform_plan")
        has_changes = branch("plan_has_changes")
        approve = approval("approve_plan", "core_infrastructure.terraform_plan", APPROVAL_TIMEOUT)
        outputs = step("terraform_outputs_checked", trigger_rule="none_failed_min_one_success")
        chain(step("terraform_init"), plan, has_changes, approve, step("terraform_apply"), outputs)
        has_changes >> outputs
        chain(outputs, wait_for("rds_primary_available", poke_interval=timedelta(seconds=20)),
              step("pgbouncer_connected_to_primary"), step("app_healthy_through_pgbouncer"),
              step("connections_pooled"), step("core_infrastructure_gate"))

    with TaskGroup(group_id="read_replica") as read_replica:
        drill = branch("failure_drill_enabled")
        take_down = step("replica_taken_down")
        restore = step("replica_restored")
        back_in_sync = wait_for("replica_back_in_sync", timeout_param="replica_lag_timeout_seconds",
                                poke_interval=timedelta(seconds=10))
        gate = step("read_replica_gate", trigger_rule="none_failed_min_one_success")
        chain(wait_for("replica_lag_below_threshold", timeout_param="replica_lag_timeout_seconds",
                       poke_interval=timedelta(seconds=10)),
              step("reads_on_replica_writes_on_primary"), drill)
        fallback = step("reads_fall_back_to_primary")
        chain(drill, take_down, fallback, restore.as_teardown(setups=take_down), back_in_sync, gate)
        fallback >> back_in_sync
        drill >> gate

    later = []
    for phase in NOT_BUILT_YET:
        with TaskGroup(group_id=phase) as group:
            placeholder = not_built(f"{phase}_gate", ISSUE)
            # It fails for sure: retrying it only delays the teardowns.
            placeholder.operator.retry_delay = timedelta(seconds=1)
        later.append(group)

    release_lock = step("release_change_lock")
    chain(begin_report.as_setup(), preflight, core_infrastructure, read_replica, *later,
          release_lock.as_teardown(setups=acquire_lock), write_report.as_teardown(setups=begin_report))
    restore >> release_lock
