"""
### Roll back the database (RDS snapshot restore)

**When:** data was damaged (a bad migration, a destructive bug) and a snapshot from before is good.
**Changes:** creates a snapshot of the live instance and a NEW instance restored from the chosen
snapshot; only if asked and approved, points PgBouncer at it. The original instance is never
deleted, renamed or modified, and the application's secret is never rewritten.

**Runbook**

1. Trigger with the form: environment; the instance (empty: the environment's primary);
   `snapshot_identifier` (`latest` or an id); `target_instance_identifier` (empty: derived as
   `<instance>-rb-<run>`; RDS's rules: a letter first, letters, digits and single hyphens, no
   hyphen at the end, at most 63); `switch_traffic`; the **reason**; the instance id in **confirm**.
2. `validate_request` checks everything before the lock is taken or anyone is paged: identifiers,
   the instance belongs to the environment (its name or its `Environment` tag), the snapshot is
   that instance's and `available`, the data the snapshot loses, and, to switch, that PgBouncer's
   configuration is reachable and the application reaches the database through PgBouncer.
3. The environment's change lock is taken, then the team is told what starts.
4. `take_pre_rollback_snapshot` (so this rollback can be undone), `restore_snapshot` into the new
   instance with the original's settings; the sensors wait up to `wait_timeout_seconds` each.
5. `verify_restored_database` connects to the new instance and checks every application table.
6. With `switch_traffic`: `approve_traffic_switch` asks the team (Required actions, link by email
   and Slack; no answer within the timeout rejects). `switch_traffic` re-checks the answer and the
   lock, then rewrites PgBouncer's entry, PAUSEs the pool (bounded by `pause_timeout_seconds`),
   RELOADs, RECONNECTs and RESUMEs; `pgbouncer_resumed` RESUMEs again as a teardown whatever
   happened. `traffic_on_restored_instance` proves the switch from `SHOW DATABASES` and from a query
   through PgBouncer answered by the restored server; `application_healthy` waits for the health
   endpoints.
7. The lock is released; the report (JSON + Markdown) goes to the state bucket under
   `reports/<env>/`; the team gets the outcome with the reason.

**Undo a switch:** point PgBouncer's entry back at the original instance (named in the report) and
RELOAD. **Clean up** the restored instance only by hand, once it is not needed.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, chain, task

from bisman_ops import params
from bisman_ops.change import lock, report
from bisman_ops.change.approval import ChangeApproval
from bisman_ops.change.phase import intent, restore
from bisman_ops.dag_defaults import CHANGE_ARGS, CHANGE_DAGRUN_TIMEOUT, START_DATE
from bisman_ops.rollback import RDS_IDENTIFIER_PATTERN, database_steps, steps

DAG_ID = "bisman_rollback_database"
APPROVAL_TIMEOUT = timedelta(hours=2)
DB_IDENTIFIER = f"^$|{RDS_IDENTIFIER_PATTERN}"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    dagrun_timeout=CHANGE_DAGRUN_TIMEOUT,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "db_instance_identifier": Param(
            None,
            type=["null", "string"],
            pattern=DB_IDENTIFIER,
            title="DB instance",
            description="Empty: the environment's primary.",
        ),
        "snapshot_identifier": Param(
            "latest",
            type="string",
            pattern=params.SNAPSHOT_PATTERN,
            title="Snapshot",
            description="`latest` or a snapshot identifier.",
        ),
        "target_instance_identifier": Param(
            None,
            type=["null", "string"],
            pattern=DB_IDENTIFIER,
            title="Restore into",
            description="Empty: derived from the instance and the run; never the live instance. RDS's rules: "
            "1-63 letters, digits, hyphens; a letter first; no '--'; no hyphen at the end.",
        ),
        "switch_traffic": Param(
            False,
            type="boolean",
            title="Switch traffic",
            description="Point PgBouncer at the restored instance (asks for approval first).",
        ),
        "wait_timeout_seconds": Param(
            5400,
            type="integer",
            minimum=30,
            maximum=6 * 3600,
            title="Wait for available (seconds)",
            description="How long each snapshot and the restore may take.",
        ),
        "pause_timeout_seconds": Param(
            30,
            type="integer",
            minimum=1,
            maximum=300,
            title="PAUSE bound (seconds)",
            description="How long PgBouncer's PAUSE may wait for running "
            "transactions before the switch gives up and resumes.",
        ),
        "reason": params.reason(),
        "confirm": params.confirm("the DB instance identifier"),
    },
) as dag:
    begun = report.begin_run_report()
    plan = database_steps.validate_request()
    acquired = lock.acquire_change_lock(note="database rollback: {{ params.reason }}")
    started = steps.notify_team_of_start(
        what="restore of {{ params.db_instance_identifier or 'the primary' }} in {{ params.environment }} "
        "from snapshot {{ params.snapshot_identifier }}{{ ' with traffic switch' if params.switch_traffic }}"
    )

    snapshot = database_steps.take_pre_rollback_snapshot(plan)
    snapshot_ready = database_steps.pre_rollback_snapshot_available(plan)
    restored = database_steps.restore_snapshot(plan)
    restored_ready = database_steps.restored_instance_available(plan)
    verified = database_steps.verify_restored_database(plan)

    switch_requested = task.short_circuit(
        database_steps.switch_requested, task_id="switch_requested", ignore_downstream_trigger_rules=False
    )()
    answer = ChangeApproval(
        task_id="approve_traffic_switch",
        subject="Switch the application to the restored database "
        "{{ ti.xcom_pull(task_ids='validate_request')['target'] }}?",
        body="{{ ti.xcom_pull(task_ids='validate_request')['approval_text'] }}",
        response_timeout=APPROVAL_TIMEOUT,
    )
    # The restore's setup is the intent, so a switch that dies between PAUSE and RESUME is resumed.
    switch_intended = intent("pause PgBouncer's pool, repoint it at the restored instance, resume",
                             task_id="switch_intended")
    switched = database_steps.switch_traffic(plan, verified, answer.output)
    resumed = restore(database_steps.pgbouncer_resumed(), intent=switch_intended, damage=switched)
    on_restored = database_steps.traffic_on_restored_instance(verified)
    healthy = steps.application_healthy()

    released = lock.release_change_lock().as_teardown(setups=acquired)
    written = report.write_run_report(
        title="Database rollback (RDS snapshot restore) in {{ params.environment }}",
        purpose="{{ params.reason }}",
        notify_team=True,
    ).as_teardown(setups=begun)

    chain(
        begun,
        plan,
        acquired,
        started,
        snapshot,
        snapshot_ready,
        restored,
        restored_ready,
        verified,
        switch_requested,
        answer,
        switch_intended,
        switched,
        on_restored,
        healthy,
        released,
        written,
    )
    switched >> resumed >> released
