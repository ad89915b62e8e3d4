#!/usr/bin/env bash
# The whole test suite from nothing: set up, lint, then the two tiers side by side, each on a sandbox
# of its own (state folder, ports, Airflow home), so the services the fast tier breaks on purpose
# (a Redis failover, a stopped database) never touch the DAG runs, and a running rehearsal is left
# alone by both:
#   - the e2e and browser tiers (`-m e2e`): whole DAG runs on a running Airflow, output streamed;
#   - the fast tier (`-m "not e2e"`): logic, clients and services, at a lower CPU priority, its output
#     printed when both end.
# Exits non-zero when either tier fails; stops everything it started.
# With arguments, one pytest with them on one sandbox: `bash scripts/test.sh -m "not e2e"` is the
# fast tier alone, `bash scripts/test.sh tests/rollout -k chaos` a selection.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# The e2e and browser tiers run on Airflow's distributed executor, as docker-compose deploys it: two
# Celery workers on a Redis broker of their own (LocalExecutor: set BISMAN_AIRFLOW_EXECUTOR).
export BISMAN_AIRFLOW_EXECUTOR="${BISMAN_AIRFLOW_EXECUTOR:-CeleryExecutor}"
LOGS="$BISMAN_ROOT/.test-logs"
mkdir -p "$LOGS"

# tier_env <name> <sandbox port offset> <Airflow port>: one tier's state folder, ports and Airflow home.
tier_env() {
  export AIRFLOW_HOME="$BISMAN_ROOT/.airflow/$1"
  export BISMAN_SANDBOX_DIR="$(sandbox_dir "$BISMAN_ROOT/.sandbox/$1")"
  export BISMAN_SANDBOX_PORT_OFFSET="$2"
  export BISMAN_AIRFLOW_PORT="$3"
  export BISMAN_TERRAFORM_WORK_DIR="$BISMAN_SANDBOX_DIR/terraform-work"
}

tier_down() {
  python -m bisman_sandbox.airflow_local down >/dev/null 2>&1 || true
  python -m bisman_sandbox down || true
}

# tier <name> <offset> <Airflow port> <pytest arguments...>: in a subshell, so each tier's environment
# is its own; the sandbox and the Airflow it starts are stopped when it ends, whatever happens.
tier() {
  local name="$1" offset="$2" port="$3"
  shift 3
  (
    tier_env "$name" "$offset" "$port"
    trap tier_down EXIT
    echo "==> [$name] sandbox up (port offset $offset)"
    python -m bisman_sandbox up
    echo "==> [$name] Airflow metadata database (PostgreSQL)"
    python -m bisman_sandbox.airflow_local db
    echo "==> [$name] pytest $*"
    python -m pytest "$@"
  )
}

echo "==> ruff"
ruff check dags include plugins tests bench

# Ports: the rehearsal of scripts/run.sh uses offset 0 and 8080; these are clear of it and of each
# other (the launcher's own test takes offset 1500, the local Airflow's test port+100).
if [ "$#" -gt 0 ]; then
  exec_rc=0
  tier test "${BISMAN_SANDBOX_PORT_OFFSET:-2000}" "${BISMAN_AIRFLOW_PORT:-18080}" "$@" || exec_rc=$?
  exit "$exec_rc"
fi

FAST_OFFSET=4000 FAST_AIRFLOW_PORT=19080
fast_pid=""
descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}
stop_fast() {  # interrupted: the fast tier's pytest stopped, then its sandbox
  if [ -n "$fast_pid" ] && kill -0 "$fast_pid" 2>/dev/null; then
    kill -TERM $(descendants "$fast_pid") 2>/dev/null || true
    wait "$fast_pid" 2>/dev/null || true
    (tier_env test-fast "$FAST_OFFSET" "$FAST_AIRFLOW_PORT" && tier_down)
  fi
}
trap stop_fast EXIT INT TERM

echo "==> fast tier in the background (its output: $LOGS/fast.log, printed at the end)"
# At a lower CPU priority, with its sandbox: the DAG runs keep the two cores they are timed on, and
# the fast tier, much the shorter, takes what they leave.
(renice -n 10 -p "$BASHPID" >/dev/null && tier test-fast "$FAST_OFFSET" "$FAST_AIRFLOW_PORT" -m "not e2e") >"$LOGS/fast.log" 2>&1 &
fast_pid=$!

e2e_rc=0
tier test 2000 18080 -m e2e || e2e_rc=$?
fast_rc=0
wait "$fast_pid" || fast_rc=$?
fast_pid=""

echo
echo "==================================== fast tier ===================================="
cat "$LOGS/fast.log"
echo
echo "==> e2e and browser tiers: $([ "$e2e_rc" -eq 0 ] && echo passed || echo "FAILED (exit $e2e_rc)")"
echo "==> fast tier: $([ "$fast_rc" -eq 0 ] && echo passed || echo "FAILED (exit $fast_rc)")"
[ "$e2e_rc" -eq 0 ] && [ "$fast_rc" -eq 0 ]
