"""
### BISMAN ERP production rollout

The production rollout checklist as one DAG, one task group per phase: preflight, core
infrastructure, read replica, usage metering and quotas, billing, scheduled jobs, monitoring,
chaos, post-deploy. Each group ends with a gate; a failed check stops every later phase and
notifies the team by email and Slack with what was checked, the value seen, what was expected and
what to do.

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
then clear that task with its downstream tasks. Every task is idempotent: the lock is re-acquired
by the same run, a plan already applied is not applied again, checks just measure again.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, TaskGroup, chain

from bisman_ops import params
from bisman_ops.change import lock, report
from bisman_ops.change.approval import ChangeApproval, ChangeChoice
from bisman_ops.change.notify import TeamNotifier
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE
from bisman_ops.rollout import billing as bill
from bisman_ops.rollout import chaos as drills
from bisman_ops.rollout import core_infrastructure as core
from bisman_ops.rollout import monitoring as mon
from bisman_ops.rollout import post_deploy as post
from bisman_ops.rollout import preflight as pre
from bisman_ops.rollout import read_replica as replica
from bisman_ops.rollout import rollback_offer as rollback
from bisman_ops.rollout import scheduled_jobs as jobs
from bisman_ops.rollout import usage_metering as usage

DAG_ID = "bisman_rollout"
APPROVAL_TIMEOUT = timedelta(hours=2)  # shorter than the change lock's 3 h lease

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

    with TaskGroup(group_id="preflight") as preflight:
        settings = pre.rollout_params_valid()
        secrets = pre.app_secrets_valid(settings)
        checks = [
            pre.aws_identity_and_permissions(settings),
            pre.terraform_version_supported(settings),
            pre.state_backend_checked(settings),
            secrets,
            pre.domain_resolves_or_delegated(settings),
            pre.certificate_issued(settings),
        ]
        # Changes only after every read-only check passed: the backend, then the lock, then secrets.
        backend_ready = pre.state_backend_ready(settings)
        acquired = lock.acquire_change_lock(note="bisman_rollout of {{ params.app_image }}")
        chain(checks, backend_ready, acquired, pre.missing_secrets_generated(settings, secrets),
              pre.preflight_gate(settings))

    with TaskGroup(group_id="core_infrastructure") as core_infrastructure:
        plan = core.terraform_plan(settings)
        answer = ChangeApproval(task_id="approve_plan", question=plan, response_timeout=APPROVAL_TIMEOUT)
        applied = core.terraform_apply(settings, plan, answer.output)
        outputs = core.terraform_outputs_checked(settings, plan, applied)
        # No changes: the short-circuit skips the approval, so the apply too; the outputs still run.
        chain(core.terraform_init(settings), plan, core.plan_has_changes(plan), answer)
        chain(outputs, core.rds_primary_available(outputs), core.pgbouncer_connected_to_primary(outputs),
              core.app_healthy_through_pgbouncer(outputs), core.connections_pooled(outputs),
              core.core_infrastructure_gate(plan, outputs))

    with TaskGroup(group_id="read_replica") as read_replica:
        routing = replica.reads_on_replica_writes_on_primary(outputs)
        taken_down = replica.replica_taken_down(outputs)
        restored = replica.replica_restored(outputs).as_teardown(setups=taken_down)
        back_in_sync = replica.replica_back_in_sync(settings, outputs)
        gate = replica.read_replica_gate(settings)
        fallback = replica.reads_fall_back_to_primary(outputs, routing)
        chain(replica.replica_lag_below_threshold(settings, outputs), routing,
              replica.failure_drill_enabled(settings), taken_down, fallback, restored, back_in_sync, gate)
        fallback >> back_in_sync  # a failed fallback fails the phase even though the teardown passed
        # Drill off: the short-circuit skips it all; the gate still follows the routing check.
        routing >> gate

    with TaskGroup(group_id="usage_metering") as usage_metering:
        shape = usage.usage_params_valid()
        started = usage.migrations_task_started(outputs)
        migrated = usage.migrations_succeeded(outputs, started)
        test_tenants = usage.test_tenants_created()
        load = usage.load_test_within_thresholds(outputs, shape, test_tenants)
        metering = usage.metering_exact(test_tenants, load)
        quota = usage.quota_enforced(outputs, test_tenants)
        tenants_removed = usage.test_tenants_removed(test_tenants).as_teardown(setups=test_tenants)
        chain(shape, usage.meter_settings_enabled(outputs), started, migrated,
              usage.usage_tables_match_contract(migrated), test_tenants, load, metering, quota,
              tenants_removed, usage.usage_metering_gate(load, metering, quota))

    with TaskGroup(group_id="billing") as billing:
        bills = bill.billing_settings_valid(settings)
        prices = bill.prices_active_for_their_plans(bills, outputs)
        endpoint_plan = bill.webhook_endpoint_planned(bills, outputs)
        roll_answer = ChangeApproval(task_id="approve_webhook_secret_roll", question=endpoint_plan,
                                     response_timeout=APPROVAL_TIMEOUT)
        applied = bill.stripe_configuration_applied(bills, outputs, prices, endpoint_plan, roll_answer.output)
        refused = bill.wrongly_signed_event_refused()
        fixtures = bill.stripe_cli_triggers_replayed(outputs)
        billing_passed = bill.billing_gate(bills, applied)
        # Read-only checks first; only an endpoint whose secret is unknown waits for a person.
        chain(bills, bill.stripe_key_mode_matches_environment(bills, outputs), [prices, endpoint_plan],
              bill.webhook_secret_roll_needed(endpoint_plan), roll_answer, applied)
        chain(applied, bill.app_secrets_changed(applied), bill.app_redeployed(outputs),
              bill.app_rolled_out(outputs), bill.webhook_endpoint_reachable(bills),
              bill.signed_event_accepted(outputs), refused, bill.test_mode_checks_enabled(bills), fixtures,
              bill.triggered_events_delivered(fixtures),
              bill.checkout_session_created(bills, outputs, prices), billing_passed)
        refused >> billing_passed  # prod: the test-mode checks are skipped; the gate follows the refusal

    with TaskGroup(group_id="scheduled_jobs") as scheduled_jobs:
        deployed = jobs.recurring_dags_deployed()
        unpaused = jobs.recurring_dags_unpaused(deployed)
        tenants = jobs.smoke_tenants_created(settings)
        smoke_removed = jobs.smoke_tenants_removed(tenants).as_teardown(setups=tenants)
        customer_visible = jobs.customer_visible_smoke_runs_allowed(settings)
        smoke_runs = [
            jobs.smoke_run(task_id="daily_usage_aggregation_smoke_run", dag_id=jobs.DAILY_AGGREGATION),
            jobs.smoke_run(task_id="weekly_audit_smoke_run", dag_id=jobs.WEEKLY_AUDIT),
            jobs.smoke_run(task_id="quota_alerts_smoke_run", dag_id=jobs.QUOTA_ALERTS),
            jobs.smoke_run(task_id="trial_expiry_smoke_run", dag_id=jobs.TRIAL_EXPIRY),
        ]
        effects = [
            jobs.usage_aggregated_for_a_day(tenants),
            jobs.weekly_audit_report_written(),
            jobs.quota_alert_sent_once(tenants),
            jobs.trial_downgraded(tenants),
        ]
        jobs_gate = jobs.scheduled_jobs_gate(deployed, unpaused)
        chain(unpaused, tenants, [*smoke_runs[:2], customer_visible])
        customer_visible >> smoke_runs[2:]  # prod: no quota or trial runs (they mail and downgrade tenants)
        chain(smoke_runs, effects)  # each check reads its own run
        chain(effects, smoke_removed, jobs_gate)
        effects >> jobs_gate  # a failed check fails the phase even though the teardown passed

    with TaskGroup(group_id="monitoring") as monitoring:
        valid = mon.rule_files_valid()
        delivered = mon.rule_files_delivered(valid)
        rules = mon.rules_loaded_and_healthy(delivered)
        folder = mon.grafana_folder_ready()
        imported = mon.dashboards_imported(folder)
        probe = mon.probe_tenant_created()
        panels = mon.panels_show_live_data(imported, rules, outputs, probe)
        probe_removed = mon.probe_tenant_removed(probe).as_teardown(setups=probe)
        canary = mon.canary_alert_delivered(mon.canary_watch_started(rules))
        faulted = mon.app_errors_started(rules)
        error_alert = mon.error_alert_delivered(faulted)
        unfaulted = mon.app_errors_stopped().as_teardown(setups=faulted)
        monitoring_passed = mon.monitoring_gate(imported, panels, canary)
        # Nothing is delivered or imported until the files and the routing are shown right.
        chain(mon.dashboards_export_current(), valid, mon.alerts_route_to_email_and_slack(valid),
              delivered)
        chain(rules, folder)
        chain(imported, probe)
        panels >> probe_removed
        chain(canary, mon.threshold_drill_enabled(settings), faulted, error_alert, unfaulted,
              monitoring_passed)
        error_alert >> monitoring_passed  # a missed alert fails the phase even though the teardown passed

    with TaskGroup(group_id="chaos") as chaos:
        drill_plan = drills.drills_planned(settings)
        drills_answer = ChangeApproval(task_id="approve_drills", question=drill_plan,
                                       response_timeout=APPROVAL_TIMEOUT)
        previous = drills.drills_approved(drill_plan, drills_answer.output)
        enabled = drills.drills_enabled(drill_plan)
        # Off: everything after the switch is skipped. Staging: the approval alone is skipped.
        chain(drill_plan, enabled, drills.drills_approval_needed(drill_plan), drills_answer, previous)
        enabled >> previous
        journals, drills_restored = [], []
        for drill in drills.DRILLS:  # one at a time: one blast radius at a time
            with TaskGroup(group_id=drill):
                before = drills.steady_state_before(drill, drill_plan, outputs)
                injected = drills.fault_injected(drill, outputs, before)
                during = drills.fault_coped_with(drill, drill_plan, outputs, before, injected)
                restored_ = drills.fault_restored(drill, outputs, before).as_teardown(setups=injected)
                after = drills.steady_state_after(drill, drill_plan, settings, outputs, before, injected,
                                                  during, restored_)
                chain(previous, before)
                during >> restored_  # the restore waits for the watch (or its abort)
            previous = after
            journals.append(after)
            drills_restored.append(restored_)
        drills.chaos_gate(drill_plan, journals)

    with TaskGroup(group_id="post_deploy") as post_deploy:
        # Read-only checks of what is now serving, then the baseline under load on its own.
        tls = post.tls_graded(settings)
        performance = post.performance_baseline(settings, outputs)
        chain(post.healthy_through_load_balancer(outputs),
              [tls, post.waf_active(outputs), post.security_groups_closed(outputs),
               post.database_not_public(outputs), post.secrets_not_leaked(outputs)],
              performance, post.post_deploy_gate(tls, performance))

    released = lock.release_change_lock().as_teardown(setups=acquired)

    # Failed after the apply: offer the rollbacks once the lock is free for them; nothing without a choice.
    offer = rollback.rollback_offer_prepared()
    choice = ChangeChoice(task_id="choose_rollback", question=offer, default=rollback.STOP,
                          response_timeout=APPROVAL_TIMEOUT,
                          options_mapping={rollback.APPLICATION: "application_rollback_triggered",
                                           rollback.INFRASTRUCTURE: "infrastructure_rollback_triggered",
                                           rollback.STOP: "rollback_declined"})
    triggered = [
        rollback.RollbackTriggered(task_id="application_rollback_triggered",
                                   trigger_dag_id=rollback.APPLICATION_DAG, offer=offer, form="application"),
        rollback.RollbackTriggered(task_id="infrastructure_rollback_triggered",
                                   trigger_dag_id=rollback.INFRASTRUCTURE_DAG, offer=offer,
                                   form="infrastructure"),
        rollback.rollback_declined(offer),
    ]
    chain(released, offer, rollback.rollback_offered(offer), choice, triggered)

    written = report.write_run_report(
        title="BISMAN ERP rollout to {{ params.environment }}",
        purpose="roll out {{ params.app_image }} to {{ params.domain_name }}",
    ).as_teardown(setups=begun)
    chain(begun, preflight, core_infrastructure, read_replica, usage_metering, billing, scheduled_jobs,
          monitoring, chaos, post_deploy, released, written)
    triggered >> written  # the report records the choice
    # What the phases changed for their checks is restored before the lock is given back.
    [restored, tenants_removed, smoke_removed, probe_removed, unfaulted, *drills_restored] >> released
