# Sourced by the run and test scripts: where things live. Configuration is by environment
# variables only; nothing edits airflow.cfg.
BISMAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BISMAN_ROOT
export PATH="$BISMAN_ROOT/.venv/bin:$PATH"
export PYTHONPATH="$BISMAN_ROOT/include${PYTHONPATH:+:$PYTHONPATH}"

# PostgreSQL and PgBouncer run as the `postgres` user, which must be able to reach the sandbox's state
# folder; a checkout under a private home (mode 700) cannot host it, so fall back to /var/tmp.
sandbox_dir() {
  local wanted="$1"
  mkdir -p "$wanted"
  if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 && ! runuser -u postgres -- test -x "$wanted"; then
    wanted="/var/tmp/bisman-ops-$(printf '%s' "$wanted" | sha256sum | cut -c1-12)"
    mkdir -p "$wanted"
    chmod 711 "$wanted"
  fi
  printf '%s' "$wanted"
}
