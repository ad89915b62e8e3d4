"""Start, find and stop the sandbox's background processes by PID.

Each process gets its own session (so stopping it stops its children too), a pid file
under ``<state>/pids/`` and a log under ``<state>/logs/``. Stopping reads the pid file, so
``down`` works after a crash of the launcher itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bisman_sandbox.context import HOST, SandboxContext


class SandboxError(RuntimeError):
    """A sandbox service could not be started, checked or stopped."""


def pid_file(ctx: SandboxContext, name: str) -> Path:
    return ctx.path("pids", f"{name}.pid")


def read_pid(ctx: SandboxContext, name: str) -> int | None:
    f = pid_file(ctx, name)
    try:
        return int(f.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def pid_from_pidfile(path: Path, program: str) -> int | None:
    """The PID a server wrote into its own pid file (first line), if that process is alive and runs
    ``program``: a stale file whose PID was reused by something else does not count."""
    try:
        pid = int(path.read_text().split("\n", 1)[0].strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            runs_program = f.read().split(b"\0", 1)[0].endswith(program.encode())
    except FileNotFoundError:
        return None
    return pid if runs_program and pid_alive(pid) else None


def is_running(ctx: SandboxContext, name: str) -> bool:
    pid = read_pid(ctx, name)
    return pid is not None and pid_alive(pid)


def start_process(
    ctx: SandboxContext,
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` in the background unless ``name`` already runs; return its PID.

    ``user`` runs it through ``runuser`` (PostgreSQL and PgBouncer refuse to run as root).
    """
    pid = read_pid(ctx, name)
    if pid is not None and pid_alive(pid):
        return pid
    if user and os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    log = open(ctx.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    log.close()
    pid_file(ctx, name).write_text(str(proc.pid))
    return proc.pid


def stop_process(ctx: SandboxContext, name: str, timeout: float = 10.0) -> bool:
    """Stop the process group recorded for ``name``; return whether one was running."""
    pid = read_pid(ctx, name)
    pid_file(ctx, name).unlink(missing_ok=True)
    if pid is None or not pid_alive(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        _reap(pid)
        time.sleep(0.1)
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


def kill_process(ctx: SandboxContext, name: str) -> bool:
    """SIGKILL the process group recorded for ``name`` (a machine lost under it: nothing drains,
    nothing exits cleanly); return whether one was running."""
    pid = read_pid(ctx, name)
    pid_file(ctx, name).unlink(missing_ok=True)
    if pid is None or not pid_alive(pid):
        return False
    _signal_group(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll ``check`` until it is true; raise a SandboxError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # the service is still coming up
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise SandboxError(f"{what} not ready after {timeout:.0f} s{detail}")


def wait_for_port(port: int, *, timeout: float, what: str) -> None:
    wait_until(lambda: port_open(port), timeout=timeout, what=f"{what} on {HOST}:{port}")
