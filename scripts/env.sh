# Sourced by the run and test scripts: where things live. Configuration is by environment
# variables only; nothing edits airflow.cfg.
BISMAN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BISMAN_ROOT
export PATH="$BISMAN_ROOT/.venv/bin:$PATH"
export PYTHONPATH="$BISMAN_ROOT/include${PYTHONPATH:+:$PYTHONPATH}"
