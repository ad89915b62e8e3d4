"""Phase 9, post-deploy verification: the health endpoints through the load balancer's address, the
API's TLS graded, the WAF on the load balancer, security groups closed to the world on the data
ports, the database not public, and no application secret in the application's logs or plaintext
environment.

The checks live in ``security`` and ``tls_grade`` (and ``bisman_ops.clients`` for health and the
TLS scanner) and take plain values and clients; the tasks below are the DAG's ``post_deploy`` group,
fed the Terraform outputs, and ``PARAMS`` is its part of the form. Two small interfaces let a
deployment differ, registered through ``bisman_ops.extension``: where its data services listen
beyond what RDS reports (``security.ServiceExposure``, ``BISMAN_IMPL_SERVICE_EXPOSURE``) and where
the API's TLS is scanned (``TlsEndpoint``, ``BISMAN_IMPL_TLS_ENDPOINT``; AWS: the domain on 443).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from airflow.sdk import Param

from bisman_ops import params
from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, context, step
from bisman_ops.clients.aws import client as aws
from bisman_ops.rollout.post_deploy import security, tls_grade

EXPOSURE_EXTENSION = "service_exposure"
TLS_EXTENSION = "tls_endpoint"
HEALTH_POKE = timedelta(seconds=15)

PARAMS: dict[str, Param] = {
    "post_deploy_health_timeout_seconds": params.wait_seconds(
        300, "Health wait (s)", "How long the health endpoints may take to answer 200 through the load "
                                "balancer."),
    "secret_scan_window_minutes": Param(60, type="integer", minimum=1, maximum=1440,
                                        title="Log window scanned for secrets (min)",
                                        description="How far back the application's log group is read "
                                                    "for secret values."),
    "perf_path": Param("/health", type="string", pattern=r"^/[A-Za-z0-9/_.-]*$", title="Baseline endpoint",
                       description="The path loaded for the performance baseline (the checklist's hey "
                                   "run; CONTRACT.md's /health)."),
    "perf_requests": Param(1000, type="integer", minimum=50, maximum=100000,
                           title="Baseline requests per run", description="hey -n: requests per run."),
    "perf_concurrency": Param(50, type="integer", minimum=1, maximum=1000, title="Baseline concurrency",
                              description="hey -c: requests in flight."),
    "perf_runs": Param(5, type="integer", minimum=5, maximum=30, title="Baseline runs",
                       description="Runs after the warm-up (at least 5: with fewer the exact Mann-Whitney "
                                   "test cannot reach p < 0.01)."),
    "perf_regression_ratio": Param(1.1, type="number", exclusiveMinimum=1, title="Regression ratio",
                                   description="Median p95 over the baseline's that counts as slower."),
    "perf_regression_alpha": Param(0.01, type="number", exclusiveMinimum=0, maximum=0.5,
                                   title="Regression significance",
                                   description="One-sided Mann-Whitney p-value below which slower is real."),
    "tls_min_grade": Param("A", type="string", enum=["A+", "A", "A-", "B"], title="Minimum TLS grade",
                           description="The API's TLS grade the gate requires (SSL Labs' rules, computed "
                                       "locally; the checklist asks for A)."),
}


class TlsEndpoint(Protocol):
    """Where the API's TLS is scanned for ``domain_name``: ``{"host", "port", "server_name",
    "ca_file"}`` (``ca_file``: a trust anchor besides the public roots, or None)."""

    def address(self, domain_name: str) -> dict: ...


class PublicEndpoint:
    """AWS: the API's public name on 443, trusted by the public roots."""

    def address(self, domain_name: str) -> dict:
        return {"host": domain_name, "port": 443, "server_name": domain_name, "ca_file": None}


def tls_verdict(summary: dict, required: str) -> dict:
    """The grade of a scan summary, failing below ``required`` with every cap's reason."""
    where = f"{summary.get('server_name', '?')}"
    if not summary.get("reachable"):
        raise CheckFailed(f"TLS of {where}", f"no handshake ({summary.get('error', '?')})", "a TLS endpoint",
                          "Check the HTTPS listener and its certificate, then clear this task", summary)
    verdict = tls_grade.grade(summary)
    shown = ("chain_trusted", "hostname_matches", "leaf_days", "leaf_not_after", "hsts_max_age",
             "mozilla_intermediate_issues")
    measured = {**verdict, "required": required,
                "protocols": {k: v for k, v in summary["protocols"].items() if v},
                **{k: summary.get(k) for k in shown}}
    if not tls_grade.at_least(verdict["grade"], required):
        raise CheckFailed(f"TLS grade of {where}", f"{verdict['grade']} ({'; '.join(verdict['caps'])})",
                          f"{required} or better", "Fix what each reason names on the load balancer's HTTPS "
                          "listener (its security policy, certificate, HSTS), then clear this task", measured)
    return measured


def health_poke(base_url: str, results: list[dict]) -> Poke:
    """Done when every health endpoint answered 200; otherwise waiting, naming endpoint, status and
    the start of the body."""
    from bisman_ops.clients import app_http

    failing = [f"{r['path']} -> {r['status']} {r['body'][:80]!r}".rstrip()
               for r in results if r["status"] != 200]
    measured = {"base_url": base_url, "endpoints": {r["path"]: r["status"] for r in results},
                "ms": {r["path"]: r["ms"] for r in results}}
    if app_http.unhealthy(results):
        return Poke(False, measured, f"{base_url}: " + "; ".join(failing))
    return Poke(True, measured)


def exposure() -> security.ServiceExposure:
    from bisman_ops import extension

    return extension.load(EXPOSURE_EXTENSION, security.RdsOnly)()


def _running_task_definition(outputs: dict[str, Any]) -> dict[str, Any]:
    ecs = aws("ecs")
    service = ecs.describe_services(cluster=outputs["ecs_cluster_name"],
                                    services=[outputs["ecs_service_name"]])["services"][0]
    return ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]


# -- tasks: the DAG's post_deploy group ------------------------------------------------------------


@step.sensor(poke_interval=HEALTH_POKE, timeout_param="post_deploy_health_timeout_seconds")
def healthy_through_load_balancer(outputs: dict) -> Poke:
    from bisman_ops.clients import app_http

    return health_poke(outputs["api_base_url"], app_http.probe_health(base_url=outputs["api_base_url"]))


@step
def tls_graded(settings: dict) -> dict:
    from bisman_ops import extension
    from bisman_ops.clients import tls_scanner

    domain = settings["domain_name"]
    where = extension.load(TLS_EXTENSION, PublicEndpoint)().address(domain)
    try:
        summary = tls_scanner.scan(where["host"], int(where["port"]), where["server_name"], where["ca_file"])
    except tls_scanner.TlsScanError as exc:
        raise CheckFailed(f"TLS scan of {where['host']}:{where['port']}", str(exc), "a finished scan",
                          "Fix the scanner (or the network path), then clear this task") from None
    required = context()["params"].get("tls_min_grade", PARAMS["tls_min_grade"].value)
    return tls_verdict(summary, required)


def baseline_key(environment: str) -> str:
    return f"baselines/{environment}/post_deploy_performance.json"


def baseline_verdict(runs: list, previous: dict | None, conf: dict[str, Any]) -> dict[str, Any]:
    """The runs against the previous baseline: CheckFailed on a regression (both conditions)."""
    p95s = [r.p95_ms for r in runs]
    measured: dict[str, Any] = {"runs": [vars(r) for r in runs], "p95_ms": p95s,
                                "errors": sum(r.errors for r in runs)}
    if measured["errors"]:
        raise CheckFailed("performance baseline", f"{measured['errors']} failed requests", "none",
                          "Look at the application's errors under load, then clear this task", measured)
    if previous is None:
        return {**measured, "baseline": "recorded (the first for this environment)", "regressed": False}
    from bisman_ops.rollout.post_deploy import baseline

    verdict = baseline.compare(p95s, previous["p95_ms"], float(conf["perf_regression_ratio"]),
                               float(conf["perf_regression_alpha"]))
    measured.update(verdict, baseline_p95_ms=previous["p95_ms"], baseline_measured_at=previous["measured_at"],
                    baseline_build=previous.get("build"))
    if verdict["regressed"]:
        raise CheckFailed("performance against the baseline",
                          f"median p95 {verdict['median_p95_ratio']}x the baseline's, Mann-Whitney p = "
                          f"{verdict['mann_whitney_p']}", f"at most {verdict['ratio_limit']}x, or not "
                          f"significant (p >= {verdict['alpha']})",
                          "Find what slowed down (or roll back); the baseline is kept", measured)
    return {**measured, "baseline": "replaced by this run"}


@step
def performance_baseline(settings: dict, outputs: dict) -> dict:
    import json
    from datetime import UTC, datetime

    from bisman_ops.clients import s3
    from bisman_ops.rollout.post_deploy import baseline
    from bisman_ops.rollout.settings import RolloutSettings

    conf = {key: context()["params"].get(key, p.value) for key, p in PARAMS.items()}
    s = RolloutSettings.from_dict(settings)
    bucket, key = s.names.state_bucket, baseline_key(s.environment)
    url = f"{outputs['api_base_url'].rstrip('/')}{conf['perf_path']}"
    previous_text = s3.get_text(bucket, key)
    previous = json.loads(previous_text) if previous_text else None
    runs = baseline.measure(url, int(conf["perf_runs"]), int(conf["perf_requests"]),
                            int(conf["perf_concurrency"]))
    measured = baseline_verdict(runs, previous, conf)
    stored = baseline.record(runs, url, s.app_image, datetime.now(UTC).isoformat())
    s3.put_text(bucket, key, json.dumps(stored), content_type="application/json")
    return {**measured, "stored": f"s3://{bucket}/{key}"}


@step
def waf_active(outputs: dict) -> dict:
    return security.waf_verdict(aws("wafv2"), outputs["alb_arn"], outputs["waf_web_acl_arn"])


@step
def security_groups_closed(outputs: dict) -> dict:
    return security.security_group_verdict(aws("ec2"), aws("ecs"), outputs)


@step
def database_not_public(outputs: dict) -> dict:
    return security.database_exposure(aws("rds"), outputs, exposure())


@step
def secrets_not_leaked(outputs: dict) -> dict:
    from bisman_ops.rollout import preflight

    window_s = 60 * int(context()["params"].get("secret_scan_window_minutes",
                                                 PARAMS["secret_scan_window_minutes"].value))
    secret = preflight.read_app_secret(aws("secretsmanager"), outputs["app_secrets_arn"])
    messages = security.recent_log_messages(aws("logs"), outputs["app_log_group"], window_s)
    return security.secret_leaks(secret, _running_task_definition(outputs), outputs["app_log_group"],
                                 messages)


@step
def post_deploy_gate(tls: dict, performance: dict) -> dict:
    import statistics

    return {"tls_grade": tls["grade"], "median_p95_ms": statistics.median(performance["p95_ms"]),
            "baseline": performance["baseline"], "passed": True}


@phase
def post_deploy(settings: Any, outputs: Any) -> Phase:
    """Read-only checks of what is now serving (health, TLS, WAF, security groups, the database not
    public, no leaked secret), then the performance baseline under load on its own."""
    from airflow.sdk import chain

    tls = tls_graded(settings)
    performance = performance_baseline(settings, outputs)
    gate = post_deploy_gate(tls, performance)
    chain(healthy_through_load_balancer(outputs),
          [tls, waf_active(outputs), security_groups_closed(outputs), database_not_public(outputs),
           secrets_not_leaked(outputs)],
          performance, gate)
    return Phase(gate=gate)
