#!/usr/bin/env bash
# Stop what scripts/run.sh started: Airflow, then the sandbox.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export AIRFLOW_HOME="${AIRFLOW_HOME:-$BISMAN_ROOT/.airflow/run}"
export BISMAN_SANDBOX_DIR="${BISMAN_SANDBOX_DIR:-$(sandbox_dir "$BISMAN_ROOT/.sandbox/run")}"
python -m bisman_sandbox.airflow_local down
python -m bisman_sandbox down
