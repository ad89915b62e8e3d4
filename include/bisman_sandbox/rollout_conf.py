"""The conf the run script triggers ``bisman_rollout`` with: the form as an operator would fill it
for the sandbox. ``python -m bisman_sandbox.rollout_conf`` prints it as JSON."""

from __future__ import annotations

import json
import sys

from bisman_sandbox import context
from bisman_sandbox.context import SandboxContext


def rollout_conf(ctx: SandboxContext) -> dict:
    from bisman_sandbox.aws import SANDBOX_DOMAIN
    from bisman_sandbox.terraform_workspace import workspace_dir

    return {
        "environment": context.ENVIRONMENT,
        "project_name": context.PROJECT_NAME,
        "aws_region": context.AWS_REGION,
        "db_instance_class": "db.r6g.large",
        "redis_node_type": "cache.r6g.large",
        "app_image": "bisman-erp:sandbox-2",
        "domain_name": SANDBOX_DOMAIN,
        "terraform_dir": str(workspace_dir(ctx)),
        # Phase 4: the local app answers and Stripe's emulator delivers within seconds.
        "webhook_reachable_timeout_seconds": 120,
        "stripe_delivery_timeout_seconds": 120,
        # usage_metering: a short load test (prod: 100 users for 5 min), thresholds for 2 cores.
        "load_test_users": 5,
        "load_test_duration_seconds": 15,
        "load_test_p95_ms": 1000,
        "load_test_min_rps": 1,
        # scheduled_jobs: the sandbox's Airflow creates DAGs paused; the rehearsal unpauses them.
        "unpause_recurring_dags": True,
        # post_deploy: a shorter baseline (prod: hey -n 1000 -c 50), five runs still; on 2 shared cores
        # the same build drifts by far more than prod's 10% between two measurements (2.3x seen with
        # the Celery workers beside it), so only a slowdown past 3x counts here.
        "perf_requests": 300,
        "perf_concurrency": 20,
        "perf_regression_ratio": 3.0,
    }


if __name__ == "__main__":
    json.dump(rollout_conf(SandboxContext.from_env()), sys.stdout)
    sys.exit(0)
