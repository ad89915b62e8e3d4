"""The rollout's task bodies: where Airflow's context and connections become plain values and
clients for the phase modules. Each step returns ``{"measured": {...}}`` (what the run report
shows); a GateFailed becomes a failure that is not retried, with the measurement in its message.

Every step after the change lock is taken renews the lock's lease first, so a live rollout keeps
it and a dead one loses it when the lease runs out.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from bisman_ops import app_api, config
from bisman_ops.rollout.gates import GateFailed, Poke
from bisman_ops.rollout.settings import RolloutSettings

log = logging.getLogger(__name__)

DAG_ID = "bisman_rollout"
TERRAFORM_MINIMUM = "1.5.0"
PLAN_FILE = "rollout.tfplan"
GROUP = {  # task ids the steps read each other's results from
    "plan": "core_infrastructure.terraform_plan",
    "approve": "core_infrastructure.approve_plan",
    "outputs": "core_infrastructure.terraform_outputs_checked",
    "secrets": "preflight.app_secrets_valid",
    "backend": "preflight.state_backend_checked",
    "tenant": "read_replica.reads_on_replica_writes_on_primary",
}


# -- running steps -----------------------------------------------------------------------------------


def run_step(path: str, context) -> dict[str, Any]:
    """Run ``bisman_ops.rollout.tasks.<path>(context)``; GateFailed fails without retry."""
    from airflow.sdk.exceptions import AirflowFailException

    started = time.monotonic()
    try:
        result = globals()[path](context) or {}
    except GateFailed as exc:
        record_failure(context, str(exc), exc.measured)
        measured = f" Measured: {json.dumps(exc.measured, default=str)}" if exc.measured else ""
        raise AirflowFailException(f"{exc}{measured}") from None
    except Exception as exc:
        record_failure(context, f"{type(exc).__name__}: {exc}", {})
        raise
    result.setdefault("seconds", round(time.monotonic() - started, 3))
    log.info("%s: %s", context["ti"].task_id, json.dumps(result.get("measured", {}), default=str)[:2000])
    return result


def record_failure(context, message: str, measured: dict) -> None:
    """Keep the failure's message for the run report (XCom survives the failed try)."""
    from bisman_ops.run_report import redact, redact_text

    try:
        context["ti"].xcom_push(
            key="failure", value={"message": redact_text(message)[:3000], "measured": redact(measured)}
        )
    except Exception as exc:  # the failure itself matters more than its record
        log.warning("could not record the failure for the report: %s", type(exc).__name__)


def run_poke(path: str, context) -> Poke:
    from airflow.sdk.exceptions import AirflowFailException

    try:
        return globals()[path](context)
    except GateFailed as exc:
        record_failure(context, str(exc), exc.measured)
        raise AirflowFailException(f"{exc} Measured: {json.dumps(exc.measured, default=str)}") from None


def settings_of(context) -> RolloutSettings:
    return RolloutSettings.from_params(dict(context["params"]))


def owner_of(context) -> str:
    from bisman_ops import change_lock

    return change_lock.owner_for(context["ti"].dag_id, context["ti"].run_id)


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service, config.AWS_CONN_ID)


def renew_lock(context, s: RolloutSettings) -> None:
    from bisman_ops import change_lock

    change_lock.renew(aws("dynamodb"), s.names.lock_table, s.environment, owner_of(context))


def _connection(conn_id: str):
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def dsn(conn_id: str) -> str:
    """A libpq connection string from a postgres Airflow connection."""
    from psycopg.conninfo import make_conninfo

    c = _connection(conn_id)
    timeout = (c.extra_dejson or {}).get("connect_timeout", 5)
    return make_conninfo(
        host=c.host,
        port=c.port or 5432,
        user=c.login,
        password=c.password or "",
        dbname=c.schema or "",
        connect_timeout=timeout,
    )


def xcom(context, task_id: str) -> Any:
    return context["ti"].xcom_pull(task_ids=task_id)


def outputs_of(context) -> dict[str, Any]:
    result = xcom(context, GROUP["outputs"])
    if not result:
        raise GateFailed(
            "no Terraform outputs from terraform_outputs_checked in this run; clear the "
            "core_infrastructure group to produce them"
        )
    return result["outputs"]


def app_secret(s: RolloutSettings, secret_id: str | None = None) -> dict[str, str]:
    from bisman_ops.rollout import preflight

    return preflight.read_app_secret(aws("secretsmanager"), secret_id or s.names.app_secret_name)


def admin_token(s: RolloutSettings, context) -> str:
    from bisman_ops import app_tokens

    secret = app_secret(s, outputs_of(context).get("app_secrets_arn"))
    return app_tokens.mint(secret["JWT_SECRET"], role="admin", ttl=600, subject="bisman-rollout")


# -- run report and change lock (setup/teardown) -----------------------------------------------------


def begin_run_report(context) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "params": {k: v for k, v in dict(context["params"]).items()},
    }


def acquire_change_lock(context) -> dict[str, Any]:
    from bisman_ops import change_lock

    s = settings_of(context)
    try:
        holder = change_lock.acquire(
            aws("dynamodb"),
            s.names.lock_table,
            s.environment,
            owner_of(context),
            note=f"bisman_rollout of {s.app_image}",
        )
    except change_lock.ChangeLockHeld as exc:
        raise GateFailed(str(exc), {"holder": exc.holder.as_dict()}) from None
    return {"measured": holder.as_dict()}


def release_change_lock(context) -> dict[str, Any]:
    from bisman_ops import change_lock

    s = settings_of(context)
    released = change_lock.release(aws("dynamodb"), s.names.lock_table, s.environment, owner_of(context))
    if not released:
        log.warning(
            "the change lock for %s was not ours to release (expired and taken over, or already released)",
            s.environment,
        )
    return {"measured": {"released": released}}


def write_run_report(context) -> dict[str, Any]:
    from bisman_ops import run_report
    from bisman_ops.rollout import report

    ti = context["ti"]
    params = dict(context["params"])
    states = {b["task_id"]: b for b in ti.get_task_breadcrumbs(ti.dag_id, ti.run_id)}
    task_ids = [t.task_id for t in context["dag"].tasks]
    others = [task_id for task_id in task_ids if task_id != ti.task_id]
    results = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in others}
    # The approval's answer, kept by PlanApproval also when a rejection ended the task by skipping.
    results[GROUP["approve"]] = ti.xcom_pull(task_ids=GROUP["approve"], key="answer")
    failures = {
        task_id: ti.xcom_pull(task_ids=task_id, key="failure")
        for task_id in others
        if states.get(task_id, {}).get("state") == "failed"
    }
    rr = report.build(
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        params=params,
        task_ids=task_ids,
        states=states,
        results=results,
        failures=failures,
    )
    markdown = rr.to_markdown()
    log.info("Run report:\n%s", markdown)
    location: dict[str, Any] = {}
    try:
        s = settings_of(context)
        json_key, md_key = run_report.write_report(
            aws("s3"), s.names.state_bucket, s.names.reports_prefix, rr
        )
        location = {"bucket": s.names.state_bucket, "json_key": json_key, "markdown_key": md_key}
        log.info("Run report written to s3://%s/%s and %s", s.names.state_bucket, json_key, md_key)
    except Exception as exc:  # the log copy above stands; say why S3 has none
        log.warning(
            "run report not written to S3 (%s: %s); the log above is the report",
            type(exc).__name__,
            run_report.redact_text(str(exc))[:300],
        )
        location = {"error": type(exc).__name__}
    return {
        "measured": {
            "outcome": rr.outcome,
            "phase_reached": rr.sections[0].values.get("phase reached"),
            **location,
        },
        "report": rr.to_dict(),
    }


# -- preflight -----------------------------------------------------------------------------------------


def rollout_params_valid(context) -> dict[str, Any]:
    s = settings_of(context)
    return {
        "measured": {
            "environment": s.environment,
            "replica_failure_drill": s.replica_failure_drill,
            "terraform_dir": s.terraform_dir,
            "lag_threshold_s": s.replica_lag_threshold_s,
        }
    }


def aws_identity_and_permissions(context) -> dict[str, Any]:
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    identity = preflight.aws_identity(aws("sts"))
    probes = preflight.probe_permissions(aws, s.names)
    denied = [f"{call}: {result}" for call, result in probes.items() if result != "allowed"]
    measured = {
        "identity": identity,
        "read_calls": probes,
        "write_calls": "not simulated: the rollout's writes (S3 report, DynamoDB lock, secret, RDS "
        "reboot) are proven when first made; iam:SimulatePrincipalPolicy is not "
        "available in every account or emulator",
    }
    if denied:
        raise GateFailed(
            f"AWS identity {identity['arn']} may not make calls the rollout needs: "
            f"{'; '.join(denied)}. Grant them to the rollout's role, then clear this task",
            measured,
        )
    return {"measured": measured}


TERRAFORM_ENV_VARIABLE = "bisman_terraform_env"


def terraform_for(s: RolloutSettings, timeout: float | None = None):
    """Terraform with the AWS connection's identity, plus the Airflow Variable ``bisman_terraform_env``
    (a JSON object, e.g. ``{"TF_LOG": "DEBUG"}`` while debugging a provider; empty normally)."""
    from airflow.sdk import Variable

    from bisman_ops import terraform

    env = _aws_connection_env(s)
    extra = Variable.get(TERRAFORM_ENV_VARIABLE, default=None, deserialize_json=True) or {}
    if not isinstance(extra, dict):
        raise GateFailed(f"Airflow Variable {TERRAFORM_ENV_VARIABLE} must be a JSON object of NAME: value")
    env.update({str(k): str(v) for k, v in extra.items()})
    kwargs = {"timeout": timeout} if timeout else {}
    return terraform.Terraform(None, s.terraform_dir, env=env, **kwargs)


def _aws_connection_env(s: RolloutSettings) -> dict[str, str]:
    """The AWS connection's identity, region and endpoint for Terraform's AWS provider."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    from bisman_ops import terraform

    hook = AwsBaseHook(aws_conn_id=config.AWS_CONN_ID, client_type="sts")
    creds = hook.get_credentials()
    endpoint = hook.conn_config.get_service_endpoint_url(service_name="s3")
    return terraform.aws_environment(
        creds.access_key, creds.secret_key, creds.token, s.aws_region, endpoint_url=endpoint
    )


def _aws_endpoint() -> str | None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=config.AWS_CONN_ID, client_type="s3")
    return hook.conn_config.get_service_endpoint_url(service_name="s3")


def terraform_version_supported(context) -> dict[str, Any]:
    from bisman_ops.rollout import preflight
    from bisman_ops.terraform import TerraformError

    s = settings_of(context)
    try:
        version = terraform_for(s).version()
    except TerraformError as exc:
        raise GateFailed(str(exc)) from None
    return {"measured": preflight.terraform_version_check(version, TERRAFORM_MINIMUM)}


def state_backend_checked(context) -> dict[str, Any]:
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    state = preflight.inspect_state_backend(
        aws("s3"), aws("dynamodb"), s.names.state_bucket, s.names.lock_table
    )
    return {"measured": preflight.state_backend_verdict(state, s.create_state_backend)}


def app_secrets_valid(context) -> dict[str, Any]:
    """Secrets present, strong and in the right Stripe mode; the Stripe key and the SMTP
    credentials (the application's and the alert connection's) tried for real."""
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    values = app_secret(s)
    verdict = preflight.check_app_secrets(values, s.environment, s.generate_missing_secrets)
    measured: dict[str, Any] = {
        "secret": s.names.app_secret_name,
        "values": verdict.measured,
        "to_generate": verdict.to_generate,
    }
    problems = list(verdict.problems)
    if values.get("STRIPE_SECRET_KEY") and not any(p.startswith("STRIPE_SECRET_KEY") for p in problems):
        stripe = _connection(config.STRIPE_CONN_ID)
        try:
            measured["stripe"] = preflight.stripe_key_authenticates(stripe.host, values["STRIPE_SECRET_KEY"])
        except GateFailed as exc:
            problems.append(str(exc))
    smtp = _connection(config.SMTP_CONN_ID)
    extra = smtp.extra_dejson or {}
    use_ssl, starttls = not extra.get("disable_ssl", False), not extra.get("disable_tls", False)
    logins = []
    if values.get("SMTP_USER") and values.get("SMTP_PASSWORD"):
        logins.append(("application SMTP credentials", values["SMTP_USER"], values["SMTP_PASSWORD"]))
    if smtp.login:
        logins.append((f"alert connection {config.SMTP_CONN_ID}", smtp.login, smtp.password or ""))
    measured["smtp"] = {}
    for label, user, password in logins:
        try:
            measured["smtp"][label] = preflight.smtp_logs_in(
                smtp.host,
                int(smtp.port or 25),
                user,
                password,
                use_ssl=use_ssl,
                starttls=starttls,
                label=label,
            )
        except GateFailed as exc:
            problems.append(str(exc))
    if problems:
        raise GateFailed(
            f"application secrets in {s.names.app_secret_name} not ready: "
            + " | ".join(problems)
            + " Nothing was changed.",
            measured,
        )
    return {"measured": measured, "to_generate": verdict.to_generate}


def domain_resolves_or_delegated(context) -> dict[str, Any]:
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    return {"measured": preflight.domain_check(aws("route53"), s.domain_name)}


def certificate_issued(context) -> Poke:
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    return preflight.certificate_poke(aws("acm"), aws("route53"), s.domain_name)


def state_backend_ready(context) -> dict[str, Any]:
    """Create what the check found missing (the check already refused unless create_state_backend)."""
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    s3, ddb = aws("s3"), aws("dynamodb")
    state = preflight.inspect_state_backend(s3, ddb, s.names.state_bucket, s.names.lock_table)
    if not state.problems():
        return {"measured": {"created": []}}
    preflight.state_backend_verdict(state, s.create_state_backend)
    tags = {"Project": s.project_name, "Environment": s.environment, "ManagedBy": "bisman-ops"}
    return {"measured": {"created": preflight.ensure_state_backend(s3, ddb, state, s.aws_region, tags)}}


def missing_secrets_generated(context) -> dict[str, Any]:
    from bisman_ops.rollout import preflight

    s = settings_of(context)
    renew_lock(context, s)
    wanted = (xcom(context, GROUP["secrets"]) or {}).get("to_generate", [])
    generated = (
        preflight.store_generated_secrets(aws("secretsmanager"), s.names.app_secret_name, wanted)
        if wanted
        else []
    )
    return {"measured": {"generated": generated}}


def preflight_gate(context) -> dict[str, Any]:
    s = settings_of(context)
    renew_lock(context, s)
    return {"measured": {"environment": s.environment, "passed": True}}


# -- core infrastructure -------------------------------------------------------------------------------


def _terraform_ready(s: RolloutSettings, *, force_init: bool = False):
    """A Terraform in the configuration dir, initialised with the backend from the params (again if
    this worker has not: the plan and apply may run on different workers)."""
    from bisman_ops import terraform

    tf = terraform_for(s)
    if force_init or not (Path(s.terraform_dir) / ".terraform").exists():
        tf.init(
            terraform.backend_config(
                s.project_name,
                s.environment,
                s.names.state_bucket,
                s.names.lock_table,
                s.aws_region,
                endpoint_url=_aws_endpoint(),
            )
        )
    return tf


def terraform_init(context) -> dict[str, Any]:
    from bisman_ops import terraform

    s = settings_of(context)
    renew_lock(context, s)
    _terraform_ready(s, force_init=True)
    backend = terraform.backend_config(
        s.project_name, s.environment, s.names.state_bucket, s.names.lock_table, s.aws_region
    )
    return {"measured": {"backend": backend, "terraform_dir": s.terraform_dir}}


def terraform_plan(context) -> dict[str, Any]:
    """Write terraform.tfvars, plan to a file, keep the file in S3 by its SHA-256, summarise it."""
    from bisman_ops import terraform
    from bisman_ops.rollout import core_infrastructure as core

    s = settings_of(context)
    renew_lock(context, s)
    tf = _terraform_ready(s)
    tf.write_tfvars(s.tfvars())
    plan_path = Path(s.terraform_dir) / PLAN_FILE
    try:
        has_changes = tf.plan(plan_path)
        summary = terraform.summarize_plan(tf.show_json(plan_path))
    except terraform.TerraformError as exc:
        raise GateFailed(f"{exc}. Fix the configuration or the params, then clear terraform_plan") from None
    sha = core.sha256_file(plan_path)
    key = core.plan_object_key(s.environment, context["ti"].run_id)
    aws("s3").upload_file(str(plan_path), s.names.state_bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
    location = f"s3://{s.names.state_bucket}/{key}"
    body = core.approval_body(
        summary.to_markdown(),
        environment=s.environment,
        plan_sha256=sha,
        plan_location=location,
        tfvars=s.tfvars(),
        stateful_at_risk=bool(summary.stateful_at_risk),
    )
    return {
        "measured": {**summary.to_dict(), "has_changes": has_changes, "plan_sha256": sha, "plan": location},
        "has_changes": has_changes,
        "plan_key": key,
        "plan_sha256": sha,
        "approval_subject": core.approval_subject(s.environment, summary.headline()),
        "approval_body": body,
    }


def plan_has_changes(context) -> str:
    """Branch: a plan with changes goes to the approval; none skips approval and apply."""
    plan = xcom(context, GROUP["plan"])
    return GROUP["approve"] if plan and plan["has_changes"] else GROUP["outputs"]


def terraform_apply(context) -> dict[str, Any]:
    """Apply exactly the approved plan: the file from S3 whose SHA-256 the approver was shown."""
    from bisman_ops import terraform
    from bisman_ops.rollout import core_infrastructure as core

    s = settings_of(context)
    renew_lock(context, s)
    plan = xcom(context, GROUP["plan"])
    approval = xcom(context, GROUP["approve"]) or {}
    if approval.get("chosen_options") != ["Approve"]:
        raise GateFailed(
            f"the plan was not approved (answer: {approval.get('chosen_options')}); nothing applied"
        )
    s3 = aws("s3")
    marker = f"{plan['plan_key']}.applied"
    if _s3_text(s3, s.names.state_bucket, marker) == plan["plan_sha256"]:
        return {"measured": {"plan_sha256": plan["plan_sha256"], "applied": "already, by an earlier try"}}
    tf = _terraform_ready(s)
    with tempfile.TemporaryDirectory(dir=s.terraform_dir) as tmp:
        local = Path(tmp) / PLAN_FILE
        s3.download_file(s.names.state_bucket, plan["plan_key"], str(local))
        sha = core.sha256_file(local)
        if sha != plan["plan_sha256"]:
            raise GateFailed(
                f"the plan file in S3 has SHA-256 {sha}, the approved one {plan['plan_sha256']}; "
                "refusing to apply. Clear terraform_plan to plan and approve again"
            )
        started = time.monotonic()
        try:
            tf.apply(local)
        except terraform.TerraformError as exc:
            raise GateFailed(
                f"{exc}. Terraform saved what it applied to the state; read the error, fix "
                "the cause, then clear terraform_plan (with downstream) to plan the rest again",
                {"plan_sha256": sha, "stopped_in": "terraform apply"},
            ) from None
    s3.put_object(Bucket=s.names.state_bucket, Key=marker, Body=sha.encode())
    return {"measured": {"plan_sha256": sha, "apply_seconds": round(time.monotonic() - started, 1)}}


def _s3_text(s3: Any, bucket: str, key: str) -> str | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except Exception as exc:
        from bisman_ops.clients.aws import error_code

        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise


def terraform_outputs_checked(context) -> dict[str, Any]:
    from bisman_ops import terraform

    s = settings_of(context)
    renew_lock(context, s)
    outputs = _terraform_ready(s).outputs()
    problems = terraform.check_outputs(outputs)
    if problems:
        raise GateFailed(
            "Terraform outputs do not match CONTRACT.md: "
            + "; ".join(problems)
            + ". Add them to the configuration, apply, then clear this task",
            {"outputs": sorted(outputs)},
        )
    return {"measured": {"outputs": len(outputs)}, "outputs": outputs}


def rds_primary_available(context) -> Poke:
    from bisman_ops.rollout import core_infrastructure as core

    renew_lock(context, settings_of(context))
    return core.rds_available_poke(aws("rds"), outputs_of(context)["db_instance_identifier"])


def pgbouncer_connected_to_primary(context) -> dict[str, Any]:
    from bisman_ops.rollout import core_infrastructure as core

    renew_lock(context, settings_of(context))
    return {
        "measured": core.pgbouncer_fronts_primary(
            dsn(config.PGBOUNCER_ADMIN_CONN_ID), dsn(config.APP_DB_CONN_ID), outputs_of(context)
        )
    }


def app_healthy_through_pgbouncer(context) -> dict[str, Any]:
    from bisman_ops import pgbouncer_admin
    from bisman_ops.rollout import core_infrastructure as core

    renew_lock(context, settings_of(context))
    measured = core.app_health(app_api.base_url())
    db_name = outputs_of(context)["db_name"]
    clients = [
        c
        for c in pgbouncer_admin.show(dsn(config.PGBOUNCER_ADMIN_CONN_ID), "STATS")
        if c["database"] == db_name
    ]
    measured["pgbouncer_transactions_served"] = int(clients[0]["total_xact_count"]) if clients else None
    if not clients or not measured["pgbouncer_transactions_served"]:
        raise GateFailed(
            f"PgBouncer has served no transaction for {db_name}: the application does not "
            "connect through it; point DATABASE_URL at PgBouncer, then clear this task",
            measured,
        )
    return {"measured": measured}


def connections_pooled(context) -> dict[str, Any]:
    from bisman_ops.rollout import core_infrastructure as core

    renew_lock(context, settings_of(context))
    return {
        "measured": core.measure_pooling(
            dsn(config.PGBOUNCER_ADMIN_CONN_ID),
            app_api.base_url(),
            outputs_of(context)["db_name"],
            primary_dsn=dsn(config.APP_DB_PRIMARY_CONN_ID),
        )
    }


def core_infrastructure_gate(context) -> dict[str, Any]:
    s = settings_of(context)
    renew_lock(context, s)
    plan = xcom(context, GROUP["plan"]) or {}
    return {"measured": {"plan_had_changes": plan.get("has_changes"), "passed": True}}


# -- read replica -----------------------------------------------------------------------------------------


def _lag_poke(context) -> Poke:
    from bisman_ops.rollout import read_replica

    s = settings_of(context)
    renew_lock(context, s)
    return read_replica.lag_poke(
        aws("cloudwatch"),
        outputs_of(context)["db_replica_identifier"],
        s.replica_lag_threshold_s,
        dsn(config.APP_DB_PRIMARY_CONN_ID),
        dsn(config.APP_DB_REPLICA_CONN_ID),
    )


def replica_lag_below_threshold(context) -> Poke:
    return _lag_poke(context)


def replica_back_in_sync(context) -> Poke:
    return _lag_poke(context)


def reads_on_replica_writes_on_primary(context) -> dict[str, Any]:
    from bisman_ops.rollout import read_replica

    s = settings_of(context)
    renew_lock(context, s)
    outputs = outputs_of(context)
    primary = dsn(config.APP_DB_PRIMARY_CONN_ID)
    tenant_id = read_replica.probe_tenant_id(primary)
    measured = read_replica.verify_routing(
        app_api.base_url(),
        admin_token(s, context),
        aws("logs"),
        outputs["app_log_group"],
        tenant_id,
        primary,
    )
    return {"measured": measured, "tenant_id": tenant_id}


def failure_drill_enabled(context) -> str:
    s = settings_of(context)
    return "read_replica.replica_taken_down" if s.replica_failure_drill else "read_replica.read_replica_gate"


def _control(context):
    from bisman_ops.rollout import read_replica

    return read_replica.replica_control(aws("rds"), outputs_of(context)["db_replica_identifier"])


def replica_taken_down(context) -> dict[str, Any]:
    renew_lock(context, settings_of(context))
    return {"measured": _control(context).take_down()}


def reads_fall_back_to_primary(context) -> dict[str, Any]:
    from bisman_ops.rollout import read_replica

    s = settings_of(context)
    renew_lock(context, s)
    tenant_id = (xcom(context, GROUP["tenant"]) or {}).get("tenant_id") or read_replica.probe_tenant_id(
        dsn(config.APP_DB_PRIMARY_CONN_ID)
    )
    return {
        "measured": read_replica.verify_fallback(
            app_api.base_url(),
            admin_token(s, context),
            aws("logs"),
            outputs_of(context)["app_log_group"],
            tenant_id,
        )
    }


def replica_restored(context) -> dict[str, Any]:
    """Teardown: runs whatever happened in the drill (but not when the drill never took it down)."""
    return {"measured": _control(context).restore()}


def read_replica_gate(context) -> dict[str, Any]:
    s = settings_of(context)
    renew_lock(context, s)
    return {"measured": {"drill": s.replica_failure_drill, "passed": True}}
