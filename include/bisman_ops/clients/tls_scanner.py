"""The TLS scanner (sslyze, ``bisman_ops.tls_scan``) run in its own interpreter: sslyze pins an
older ``cryptography`` than Airflow's environment has, so it lives in a virtualenv of its own.

``BISMAN_TLS_SCANNER_PYTHON`` names that interpreter; by default the project's ``.venv-tls`` (made
by ``scripts/setup.sh``; the image has it at the same place)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

PYTHON_ENV = "BISMAN_TLS_SCANNER_PYTHON"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # include/: where bisman_ops is
DEFAULT_PYTHON = PACKAGE_ROOT.parent / ".venv-tls" / "bin" / "python"
SCAN_TIMEOUT_S = 300
NETWORK_TIMEOUT_S = 10


class TlsScanError(RuntimeError):
    """The scanner could not run or did not finish."""


def python() -> str:
    return os.environ.get(PYTHON_ENV) or str(DEFAULT_PYTHON)


def scan(host: str, port: int, server_name: str, ca_file: str | None = None,
         timeout_s: float = SCAN_TIMEOUT_S) -> dict:
    """The scan summary of ``host:port`` (SNI ``server_name``; ``ca_file`` as the trust anchor
    besides the public roots)."""
    interpreter = python()
    if not Path(interpreter).exists():
        raise TlsScanError(f"no TLS scanner at {interpreter}: set {PYTHON_ENV} to a Python with sslyze 6 "
                           "(scripts/setup.sh makes .venv-tls)")
    argv = [interpreter, "-m", "bisman_ops.tls_scan", host, str(port), "--server-name", server_name,
            "--timeout", str(NETWORK_TIMEOUT_S)]
    if ca_file:
        argv += ["--ca-file", ca_file]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)})
    except subprocess.TimeoutExpired:
        raise TlsScanError(f"the TLS scan of {host}:{port} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise TlsScanError(f"the TLS scanner failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
    try:
        return json.loads(done.stdout)
    except ValueError:
        raise TlsScanError(f"the TLS scanner printed no JSON: {done.stdout.strip()[-300:]}") from None
