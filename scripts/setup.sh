#!/usr/bin/env bash
# Install what bisman-ops needs on a fresh Debian 12 machine: the Debian packages of the sandbox's
# services, a Python 3.11 venv in .venv and the pinned requirements. Safe to re-run: it only does
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

DEBIAN_PACKAGES=(postgresql postgresql-client pgbouncer redis-server redis-sentinel prometheus
                 prometheus-alertmanager git ca-certificates chromium hey)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  # The packages' own services are not used (the sandbox runs its own on other ports): keep them off.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing pinned requirements into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
  .venv/bin/uv pip install -q --python .venv/bin/python -r requirements.txt -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# sslyze (the post-deploy TLS scan) pins an older cryptography than Airflow's: a venv of its own.
tls_stamp=.venv-tls/.requirements.sha256
tls_want=$(sha256sum requirements-tls.txt | cut -d' ' -f1)
if [ "$(cat "$tls_stamp" 2>/dev/null)" != "$tls_want" ]; then
  echo "==> installing the TLS scanner into .venv-tls"
  [ -x .venv-tls/bin/python ] || "$PYTHON" -m venv .venv-tls
  .venv/bin/uv pip install -q --python .venv-tls/bin/python -r requirements-tls.txt
  echo "$tls_want" > "$tls_stamp"
fi
