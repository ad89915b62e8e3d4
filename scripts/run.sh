#!/usr/bin/env bash
# The main job: set up, start the sandbox and Airflow on 127.0.0.1:8080, and trigger bisman_rollout
# against the sandbox. Everything keeps running in the background; scripts/stop.sh stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
export AIRFLOW_HOME="${AIRFLOW_HOME:-$BISMAN_ROOT/.airflow/run}"
export BISMAN_SANDBOX_DIR="${BISMAN_SANDBOX_DIR:-$(sandbox_dir "$BISMAN_ROOT/.sandbox/run")}"

echo "==> starting the sandbox"
python -m bisman_sandbox up
echo "==> starting Airflow"
python -m bisman_sandbox.airflow_local up
echo "==> triggering bisman_rollout against the sandbox"
python -m bisman_sandbox.airflow_local trigger bisman_rollout \
  --conf "$(python -m bisman_sandbox.rollout_conf)"
cat <<MSG

Airflow UI:  http://127.0.0.1:${BISMAN_AIRFLOW_PORT:-8080}
Login:       admin / $(python -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" \
                        "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated")
Stop all:    bash scripts/stop.sh
MSG
