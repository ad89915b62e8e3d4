#!/usr/bin/env bash
# The whole test suite from nothing: set up, lint, then two pytest sessions side by side, each on a
# sandbox of its own (state folder, ports, Airflow home and Airflow), so the services the fast tests
# break on purpose (a Redis failover, a stopped replica) never touch a DAG run of the other, and a
# running rehearsal (scripts/run.sh) is left alone by both:
#   - "rollout", output streamed: the Airflow components, the rollout's runs (the approved rehearsal,
#     its failure paths), then the browser walkthrough;
#   - "other", its output printed when both end: the fast tier (logic, clients, services, DAG shape),
#     then the Celery workers' test and the recurring jobs' and the rollbacks' runs.
# Their lengths are about even; on 2 cores they share the CPU. Exits non-zero when either fails; stops
# everything it started.
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
ROLLOUT_OFFSET=2000 ROLLOUT_AIRFLOW_PORT=18080 OTHER_OFFSET=4000 OTHER_AIRFLOW_PORT=19080
if [ "$#" -gt 0 ]; then
  exec_rc=0
  tier test "${BISMAN_SANDBOX_PORT_OFFSET:-$ROLLOUT_OFFSET}" "${BISMAN_AIRFLOW_PORT:-$ROLLOUT_AIRFLOW_PORT}" \
    "$@" || exec_rc=$?
  exit "$exec_rc"
fi

# The split is by measured length (the rollout session is the longer: the Celery test went to the other).
ROLLOUT=(tests/e2e/test_airflow_components.py tests/e2e/test_rollout*.py tests/ui)
OTHER=(--ignore=tests/e2e/test_airflow_components.py --ignore-glob="tests/e2e/test_rollout*.py" --ignore=tests/ui)

# Both sessions run as background jobs with job control on, so each is a process group of its own:
# Ctrl-C reaches this script alone, and `wait` returns at once for the trap to stop each session in
# order (its pytest and what pytest started, then its Airflow and sandbox, which the launchers start
# in sessions of their own and stop by PID file). Without it bash defers a trap until a foreground
# child ends, and a background job ignores SIGINT. A session still running 30 s after SIGTERM is killed.
set -m
rollout_pid="" other_pid=""
sessions_alive() {
  local pid
  for pid in $rollout_pid $other_pid; do
    kill -0 -- "-$pid" 2>/dev/null && return 0
  done
  return 1
}
stop_sessions() {
  trap - INT TERM HUP
  echo "==> interrupted: stopping both sessions" >&2
  local pid signal
  for signal in TERM KILL; do
    for pid in $rollout_pid $other_pid; do
      kill "-$signal" -- "-$pid" 2>/dev/null || true
    done
    for _ in $(seq 30); do
      sessions_alive || break
      sleep 1
    done
  done
  wait 2>/dev/null || true
  (tier_env test "$ROLLOUT_OFFSET" "$ROLLOUT_AIRFLOW_PORT" && tier_down)
  (tier_env test-other "$OTHER_OFFSET" "$OTHER_AIRFLOW_PORT" && tier_down)
  exit 130
}
trap stop_sessions INT TERM HUP

echo "==> \"other\" session in the background (its output: $LOGS/other.log, printed at the end)"
tier test-other "$OTHER_OFFSET" "$OTHER_AIRFLOW_PORT" "${OTHER[@]}" >"$LOGS/other.log" 2>&1 &
other_pid=$!
tier test "$ROLLOUT_OFFSET" "$ROLLOUT_AIRFLOW_PORT" "${ROLLOUT[@]}" &
rollout_pid=$!

rollout_rc=0
wait "$rollout_pid" || rollout_rc=$?
other_rc=0
wait "$other_pid" || other_rc=$?
trap - INT TERM HUP

verdict() { [ "$1" -eq 0 ] && echo passed || echo "FAILED (exit $1)"; }
echo
echo "================================== \"other\" session =================================="
cat "$LOGS/other.log"
echo
echo "==> \"rollout\" session (Airflow components, rollout runs, browser): $(verdict "$rollout_rc")"
echo "==> \"other\" session (fast tier, Celery, recurring and rollback runs): $(verdict "$other_rc")"
[ "$rollout_rc" -eq 0 ] && [ "$other_rc" -eq 0 ]
