"""
### BISMAN ERP production rollout

The production rollout checklist as one DAG, one task group per phase: preflight, core
infrastructure, read replica, usage metering and quotas, billing, scheduled jobs, monitoring,
chaos, post-deploy. Each group ends with a gate; a failed check stops every later phase. The run
tells the team once how it ended (email and Slack, from its report): where it stopped, what was
checked, the value seen, what was expected and what to do; a request refused before any change is
one "REFUSED" line in Slack and pages no one.

**Trigger** it from the UI with the form (environment, project name, region, sizes, image, domain,
Terraform directory, switches). Bad values are refused by the form, or fail in
`preflight.rollout_params_valid` before anything changes.

**Approve** the Terraform plan when `core_infrastructure.approve_plan` waits for you (Required
actions; the team is mailed a link): its text lists the plan's adds, changes and destroys, any
database or Redis destroyed or replaced first, and the plan file's SHA-256. Approve applies exactly
that file; Reject (or no answer within 2 h) stops the rollout with nothing applied, and the run
ends failed. A plan without changes skips approval and apply.

**Chaos drills** (`chaos`): the replica taken down, a Redis failover, an application task
stopped, one at a time; each starts only from a steady state, is aborted when its stop condition
fires, is restored by a teardown whatever happens, and its journal goes into the report. Staging
runs them by default; prod only when the form asks, and after `chaos.approve_drills`.

**Post-deploy** (`post_deploy`): the health endpoints through the load balancer's address, then
the API's TLS graded (A or better by default; the report lists every reason it is not A+), the WAF
on the load balancer, no data port open to the world, the database not public, no application
secret in its log or plaintext environment; last, a performance baseline (`hey` runs) compared
with the environment's previous one and stored in its place unless it regressed.

**Change lock**: `preflight.acquire_change_lock` takes the environment's lock (DynamoDB, with a
lease every step renews) and `release_change_lock` gives it back whatever happens; a second rollout
or a rollback of the same environment fails on it without touching anything. If a worker died, the
lease expires on its own (3 h).

**A failure after the apply offers a rollback**: once the lock is released, `choose_rollback` asks
(Required actions; the team is mailed a link) "Roll back the application", "Roll back the
infrastructure" or "Stop" (also the answer after 2 h). A rollback choice triggers that rollback DAG
with its form filled from this run (environment, target, the failed task as the reason), linked
from the task; the rollback's own checks and plan approval still apply. Nothing is rolled back
without a choice.

**Run report**: `write_run_report` always runs last; it writes JSON and Markdown to
`s3://<project>-<env>-terraform-state/reports/<env>/bisman_rollout/<run>` and into its log:
outputs, measurements, the approval (who, when, what was shown), timings, where it stopped.

**Resume** after a failure: fix the cause named in the failed task's log (and the notification),
then, once the run has ended or waits at `choose_rollback`, clear that task with its downstream
tasks (cleared while Airflow is still marking the failure downstream, a later task can be left
upstream_failed). Every task is idempotent: the lock is re-acquired by the same run, a plan
already applied is not applied again, checks just measure again, and a damaging step killed
mid-way was already undone by its restore before it runs again.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param, chain

from bisman_ops import params
from bisman_ops.change import lock, report
from bisman_ops.change.approval import APPROVAL_TIMEOUT, ChangeChoice
from bisman_ops.change.phase import run_in_order
from bisman_ops.dag_defaults import CHANGE_ARGS, CHANGE_DAGRUN_TIMEOUT, START_DATE
from bisman_ops.rollout import billing as bill
from bisman_ops.rollout import chaos as drills
from bisman_ops.rollout import core_infrastructure as infra
from bisman_ops.rollout import monitoring as mon
from bisman_ops.rollout import post_deploy as post
from bisman_ops.rollout import preflight as pre
from bisman_ops.rollout import read_replica as replica
from bisman_ops.rollout import rollback_offer as rollback
from bisman_ops.rollout import scheduled_jobs as jobs
from bisman_ops.rollout import usage_metering as usage

DAG_ID = "bisman_rollout"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    dagrun_timeout=CHANGE_DAGRUN_TIMEOUT,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollout"],
    doc_md=__doc__,
    params={
        **params.section("Target", {
            "environment": params.environment(),
            "project_name": params.project_name(),
            "aws_region": params.aws_region(),
            "domain_name": Param("api.staging.bisman.test", type="string", pattern=params.DOMAIN_PATTERN,
                                 title="API domain name",
                                 description="The public API's name: DNS, certificate and Stripe webhook."),
            "app_image": Param("bisman-erp:latest", type="string", minLength=3, title="Application image",
                               description="The image the ECS service runs after this rollout."),
            "db_instance_class": Param("db.r6g.large", type="string",
                                       pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$", title="RDS instance class",
                                       description="Primary and replica class (db_instance_class)."),
            "redis_node_type": Param("cache.r6g.large", type="string",
                                     pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$", title="Redis node type",
                                     description="ElastiCache node type (Terraform's redis_node_type)."),
            "terraform_dir": params.terraform_dir(),
        }),
        **params.section("Preflight and core infrastructure", {
            "create_state_backend": Param(False, type="boolean", title="Create the state backend",
                                          description="Create the Terraform state bucket and lock table if "
                                                      "missing (otherwise preflight fails on them)."),
            "generate_missing_secrets": Param(False, type="boolean", title="Generate missing secrets",
                                              description="Generate JWT_SECRET, DB_PASSWORD and "
                                                          "REDIS_PASSWORD in Secrets Manager when missing."),
            "certificate_timeout_seconds": params.wait_seconds(
                1800, "Certificate wait (s)", "How long to wait for the ACM certificate to be ISSUED."),
        }),
        **params.section("Read replica", {
            "replica_failure_drill": Param(None, type=["null", "boolean"], title="Replica-failure drill",
                                           description="Take the read replica down and check the fallback. "
                                                       "Empty: on for staging, off for prod."),
            "replica_lag_threshold_seconds": Param(1.0, type="number", exclusiveMinimum=0,
                                                   title="Replica lag threshold (s)",
                                                   description="The lag the gates accept (CloudWatch "
                                                               "ReplicaLag and PostgreSQL's replay lag)."),
            "replica_lag_timeout_seconds": params.wait_seconds(
                600, "Replica lag timeout (s)", "How long the lag gates wait before failing."),
        }),
        **params.section("Usage metering and quotas", usage.PARAMS),
        **params.section("Billing (Stripe)", bill.PARAMS),
        **params.section("Scheduled jobs", jobs.PARAMS),
        **params.section("Monitoring", mon.PARAMS),
        **params.section("Chaos drills", drills.PARAMS),
        **params.section("Post-deploy", post.PARAMS),
    },
) as dag:
    begun = report.begin_run_report()
    first = pre.preflight()
    settings = first.value
    core = infra.core_infrastructure(settings)
    outputs = core.value
    phases = [
        first,
        core,
        replica.read_replica(settings, outputs),
        usage.usage_metering(outputs),
        bill.billing(settings, outputs),
        jobs.scheduled_jobs(settings),
        mon.monitoring(settings, outputs),
        drills.chaos(settings, outputs),
        post.post_deploy(settings, outputs),
    ]
    released = lock.release_change_lock().as_teardown(setups=first.lock)

    # Failed after the apply: offer the rollbacks once the lock is free for them; nothing without a choice.
    offer = rollback.rollback_offer_prepared()
    choice = ChangeChoice(task_id="choose_rollback", question=offer, default=rollback.STOP,
                          response_timeout=APPROVAL_TIMEOUT,
                          options_mapping={rollback.APPLICATION: "application_rollback_triggered",
                                           rollback.INFRASTRUCTURE: "infrastructure_rollback_triggered",
                                           rollback.STOP: "rollback_declined"})
    triggered = [
        rollback.RollbackTriggered(task_id="application_rollback_triggered",
                                   trigger_dag_id=rollback.APPLICATION_DAG, offer=offer, form="application",
                                   answer=choice.answer, option=rollback.APPLICATION),
        rollback.RollbackTriggered(task_id="infrastructure_rollback_triggered",
                                   trigger_dag_id=rollback.INFRASTRUCTURE_DAG, offer=offer,
                                   form="infrastructure", answer=choice.answer,
                                   option=rollback.INFRASTRUCTURE),
        rollback.rollback_declined(offer),
    ]
    chain(released, offer, rollback.rollback_offered(offer), choice, triggered)

    written = report.write_run_report(
        title="BISMAN ERP rollout to {{ params.environment }}",
        purpose="roll out {{ params.app_image }} to {{ params.domain_name }}",
        notify_team=True,
    ).as_teardown(setups=begun)
    # The phases in order; what they changed for their checks is restored before the lock is given back.
    run_in_order(begun, phases, released, written)
    triggered >> written  # the report records the choice
