#!/usr/bin/env bash
# The whole test suite from nothing: set up, start the sandbox (its own state folder and ports, so a
# running rehearsal is left alone), lint, run pytest, stop everything it started. Exits non-zero on
# any failure. Extra arguments go to pytest: `bash scripts/test.sh -m "not e2e"` is the fast tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export AIRFLOW_HOME="$BISMAN_ROOT/.airflow/test"
export BISMAN_SANDBOX_DIR="$(sandbox_dir "$BISMAN_ROOT/.sandbox/test")"
export BISMAN_SANDBOX_PORT_OFFSET="${BISMAN_SANDBOX_PORT_OFFSET:-2000}"
export BISMAN_AIRFLOW_PORT="${BISMAN_AIRFLOW_PORT:-18080}"
# The e2e and browser tiers run on Airflow's distributed executor, as docker-compose deploys it: two
# Celery workers on a Redis broker of their own (LocalExecutor: set BISMAN_AIRFLOW_EXECUTOR).
export BISMAN_AIRFLOW_EXECUTOR="${BISMAN_AIRFLOW_EXECUTOR:-CeleryExecutor}"

cleanup() {
  python -m bisman_sandbox.airflow_local down >/dev/null 2>&1 || true
  python -m bisman_sandbox down || true
}
trap cleanup EXIT

echo "==> ruff"
ruff check dags include plugins tests bench
echo "==> sandbox up"
python -m bisman_sandbox up
echo "==> Airflow metadata database (PostgreSQL)"
python -m bisman_sandbox.airflow_local db
echo "==> pytest"
python -m pytest "$@"
