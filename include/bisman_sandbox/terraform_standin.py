"""A stand-in for the ``terraform`` CLI (Terraform cannot be installed here), for the sandbox.

It speaks the subset of the CLI the DAGs use, with Terraform's output formats, messages and exit
codes, over configurations in Terraform's JSON syntax (``*.tf.json``):

    terraform [-chdir=DIR] version [-json]
    terraform [-chdir=DIR] init [-backend-config=KEY=VALUE ...] [-reconfigure] [-input=false] [-no-color]
    terraform [-chdir=DIR] validate [-json] [-no-color]
    terraform [-chdir=DIR] plan [-out=FILE] [-detailed-exitcode] [-var-file=F ...] [-var K=V ...]
                               [-input=false] [-no-color] [-lock=false] [-lock-timeout=D]
    terraform [-chdir=DIR] show -json [FILE]
    terraform [-chdir=DIR] apply [-auto-approve] [-input=false] [-no-color] [FILE]
    terraform [-chdir=DIR] output [-json | -raw] [NAME]

What it models: ``variable`` blocks (``type``, ``default``, ``validation`` whose condition is
``contains([...], var.x)``, ``can(regex("...", var.x))`` or ``length(var.x) OP N``), values from
``terraform.tfvars`` (the ``key = value`` subset of HCL), ``terraform.tfvars.json``,
``*.auto.tfvars[.json]``, ``-var-file`` and ``-var`` in Terraform's precedence; ``resource`` blocks whose
attributes may use ``"${var.NAME}"``; ``output`` blocks that may also use ``"${TYPE.NAME.ATTR}"``;
``terraform.required_version`` and ``terraform.backend``. Planning diffs each resource's attributes
against the state (format 4, with serial and lineage; see ``state_path`` for where it lives):
new -> create, changed -> update, or delete+create when an attribute named in the resource's
``"_force_new": [...]`` changes (a stand-in key: real configurations get this from the provider
schema), gone -> delete. With ``TF_STANDIN_BACKEND_DIR`` set, an ``s3`` backend's state is shared by
every working directory initialised with the same bucket and key, as a remote backend's is; without it
the state is the working directory's ``terraform.tfstate``. No real infrastructure is touched, no
locking beyond one process at a time.

Fault hook: ``TF_STANDIN_FAIL_APPLY_AFTER=N`` makes apply fail after N resource changes, saving a state
with those N, as Terraform does when a provider call fails mid-apply. ``TF_STANDIN_VERSION`` sets the
version it reports and checks ``required_version`` against (default 1.9.8).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "1.9.8"
AWS_PROVIDER = "registry.terraform.io/hashicorp/aws"
AWS_PROVIDER_VERSION = "5.74.0"
PLAN_FORMAT = "bisman-terraform-standin-plan"
STATE_FILE = "terraform.tfstate"
COMPUTED = ("id",)  # attributes the stand-in's "provider" sets, never diffed
META_ARGS = ("lifecycle", "depends_on", "provider", "count", "for_each")
REQUIRED_BACKEND_ARGS = {"s3": ("bucket", "key", "region")}
RULE = "─" * 77


class TerraformError(Exception):
    """A diagnostic that ends the command with exit status 1."""

    def __init__(self, summary: str, detail: str = "", exit_code: int = 1):
        super().__init__(summary)
        self.summary = summary
        self.detail = detail
        self.exit_code = exit_code


@dataclass
class Ui:
    color: bool = True
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def out(self, text: str = "") -> None:
        print(text)

    def diagnostic(self, severity: str, summary: str, detail: str, stream) -> None:
        lines = [f"{severity}: {summary}", *(["", *detail.splitlines()] if detail else [])]
        if self.color:
            print("╷", file=stream)
            for line in lines:
                print(f"│ {line}".rstrip() if line else "│ ", file=stream)
            print("╵", file=stream)
        else:
            print("", file=stream)
            for line in lines:
                print(line, file=stream)
            print("", file=stream)

    def error(self, e: TerraformError) -> None:
        self.diagnostic("Error", e.summary, e.detail, sys.stderr)

    def flush_warnings(self) -> None:
        for summary, detail in self.warnings:
            self.diagnostic("Warning", summary, detail, sys.stdout)
        self.warnings.clear()


def terraform_version() -> str:
    return os.environ.get("TF_STANDIN_VERSION", DEFAULT_VERSION)


# --- command-line flags (Go's flag package: -name=value, -name value, -bool, -bool=false) ---------


def parse_flags(args: list[str], spec: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """``spec`` maps a flag to "bool", "str" or "multi"; returns (flags, positional arguments)."""
    flags: dict[str, Any] = {name: [] for name, kind in spec.items() if kind == "multi"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            return flags, args[i + 1:] if arg == "--" else args[i:]
        name, eq, value = arg.lstrip("-").partition("=")
        kind = spec.get(name)
        if kind is None:
            raise TerraformError("Failed to parse command-line flags", "flag provided but not defined: "
                                                                       f"-{name}")
        if kind == "bool":
            if eq and value not in ("true", "false", "1", "0"):
                raise TerraformError("Failed to parse command-line flags",
                                     f'invalid boolean value "{value}" for -{name}')
            flags[name] = (value in ("true", "1")) if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    raise TerraformError("Failed to parse command-line flags", "flag needs an argument: "
                                                                               f"-{name}")
                value = args[i]
            if kind == "multi":
                flags[name].append(value)
            else:
                flags[name] = value
        i += 1
    return flags, []


# --- configuration ------------------------------------------------------------------------------


@dataclass
class Config:
    directory: Path
    files: dict[str, dict]
    variables: dict[str, dict]
    resources: dict[str, dict]  # address -> {"type", "name", "body", "file"}
    outputs: dict[str, dict]
    terraform: dict

    @property
    def variable_files(self) -> dict[str, str]:
        return {name: spec["_file"] for name, spec in self.variables.items()}


def load_config(directory: Path) -> Config:
    hcl = sorted(p.name for p in directory.glob("*.tf"))
    if hcl:
        raise TerraformError(
            "Unsupported configuration syntax",
            f"The Terraform stand-in reads only Terraform's JSON syntax (*.tf.json); found {', '.join(hcl)}.")
    files: dict[str, dict] = {}
    for path in sorted(directory.glob("*.tf.json")):
        try:
            files[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TerraformError("Invalid JSON syntax", f"  on {path.name} line "
                                                        f"{e.lineno}:\n\n{e.msg}.") from None
    variables: dict[str, dict] = {}
    resources: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    terraform: dict = {}
    for fname, body in files.items():
        if not isinstance(body, dict):
            raise TerraformError("Incorrect JSON value type", f"  on {fname}:\n\nA JSON object is required "
                                                              "here.")
        for key in body:
            if key not in ("terraform", "variable", "resource", "output", "provider", "locals", "//"):
                raise TerraformError("Unsupported block type",
                                     f'  on {fname}:\n\nBlocks of type "{key}" are not expected here.')
        for name, spec in body.get("variable", {}).items():
            if name in variables:
                raise TerraformError("Duplicate variable declaration",
                                     f'  on {fname}:\n\nA variable named "{name}" was already declared at '
                                     f'{variables[name]["_file"]}. Variable names must be unique within a '
                                     'module.')
            variables[name] = {**spec, "_file": fname}
        for rtype, by_name in body.get("resource", {}).items():
            for rname, rbody in by_name.items():
                address = f"{rtype}.{rname}"
                if address in resources:
                    raise TerraformError("Duplicate resource configuration",
                                         f'  on {fname}:\n\nA {rtype} resource named "{rname}" was already '
                                         f'declared at {resources[address]["file"]}.')
                resources[address] = {"type": rtype, "name": rname, "body": rbody, "file": fname}
        for name, spec in body.get("output", {}).items():
            outputs[name] = {**spec, "_file": fname}
        for key, value in body.get("terraform", {}).items():
            terraform[key] = value
    return Config(directory, files, variables, resources, outputs, terraform)


def check_required_version(config: Config) -> None:
    constraint = config.terraform.get("required_version")
    if constraint and not version_satisfies(terraform_version(), constraint):
        raise TerraformError(
            "Unsupported Terraform Core version",
            f"This configuration does not support Terraform version {terraform_version()}. To proceed, "
            "either "
            "choose another supported Terraform version or update this version constraint. Version "
            "constraints are normally set for good reason, so updating the constraint may lead to other "
            "errors or unexpected behavior.")


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v.split("-")[0])[:3])


def version_satisfies(version: str, constraints: str) -> bool:
    have = _version_tuple(version)
    for c in constraints.split(","):
        m = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*v?([\d.]+)\s*", c)
        if not m:
            raise TerraformError("Invalid version constraint", f'"{c.strip()}" is not a valid version '
                                                               'constraint.')
        op, want_s = m.group(1) or "=", m.group(2)
        want = _version_tuple(want_s)
        padded = want + (0,) * (3 - len(want))
        ok = {
            ">=": have >= padded, "<=": have <= padded, ">": have > padded, "<": have < padded,
            "=": have == padded, "!=": have != padded,
            # ~> 1.5 allows 1.x >= 1.5; ~> 1.5.2 allows 1.5.x >= 1.5.2
            "~>": have >= padded and have[: max(len(want) - 1, 1)] == want[: max(len(want) - 1, 1)],
        }[op]
        if not ok:
            return False
    return True


# --- variables ----------------------------------------------------------------------------------


_TFVARS_LINE = re.compile(
    r'([A-Za-z_][\w-]*)\s*=\s*'  # name =
    r'("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false)'  # "string", number or bool
    r'\s*(?:(?:#|//).*)?'  # trailing comment
)


def parse_tfvars(text: str, filename: str) -> dict[str, Any]:
    """The ``name = value`` subset of HCL: strings, numbers, booleans, comments."""
    values: dict[str, Any] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "//")):
            continue
        m = _TFVARS_LINE.fullmatch(line)
        if not m:
            raise TerraformError("Argument or block definition required",
                                 f"  on {filename} line {lineno}:\n  {lineno}: {raw}\n\n"
                                 "An argument or block definition is required here. (The stand-in reads "
                                 'name = "string", number and true/false lines only.)')
        name, literal = m.groups()
        if name in values:
            raise TerraformError("Attribute redefined",
                                 f'  on {filename} line {lineno}:\n\nThe argument "{name}" was already set.')
        if literal.startswith('"') and "${" in literal:
            raise TerraformError("Variables not allowed",
                                 f"  on {filename} line {lineno}:\n\nVariables may not be used here.")
        values[name] = json.loads(literal)
    return values


def _read_var_file(path: Path, shown: str) -> dict[str, Any]:
    if not path.is_file():
        raise TerraformError("Failed to read variables file", f"Given variables file {shown} does not exist.")
    if path.name.endswith(".json"):
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise TerraformError("Invalid JSON syntax", f"  on {shown} line "
                                                        f"{e.lineno}:\n\n{e.msg}.") from None
        if not isinstance(values, dict):
            raise TerraformError("Incorrect JSON value type", f"  on {shown}:\n\nA JSON object is required "
                                                              "here.")
        return values
    return parse_tfvars(path.read_text(), shown)


def resolve_variables(config: Config, var_files: list[str], cli_vars: list[str], ui: Ui) -> dict[str, Any]:
    """Values in Terraform's precedence: defaults, terraform.tfvars, terraform.tfvars.json,
    *.auto.tfvars[.json] in lexical order, then -var-file and -var in command-line order."""
    d = config.directory
    sources: list[tuple[str, dict[str, Any]]] = []
    for name in ("terraform.tfvars", "terraform.tfvars.json"):
        if (d / name).is_file():
            sources.append((name, _read_var_file(d / name, name)))
    autos = sorted(p.name for p in d.iterdir() if p.name.endswith((".auto.tfvars", ".auto.tfvars.json")))
    for name in autos:
        sources.append((name, _read_var_file(d / name, name)))
    for f in var_files:
        path = Path(f) if Path(f).is_absolute() else d / f
        sources.append((f, _read_var_file(path, f)))

    values: dict[str, Any] = {}
    undeclared: list[tuple[str, str]] = []
    for source, given in sources:
        for name, value in given.items():
            if name in config.variables:
                values[name] = value
            else:
                undeclared.append((name, source))
    for item in cli_vars:
        name, eq, value = item.partition("=")
        if not eq:
            raise TerraformError("Invalid -var option",
                                 f'The given -var option "{item}" is not correctly specified. Must be a '
                                 'variable '
                                 'name and value separated by an equals sign, like -var="key=value".')
        if name not in config.variables:
            raise TerraformError("Value for undeclared variable",
                                 f'A variable named "{name}" was assigned on the command line, but the '
                                 'root module '
                                 "does not declare a variable of that name. To use this value, add a "
                                 '"variable" block to the configuration.')
        values[name] = value
    # Terraform warns (it does not fail) for undeclared values from files: the first two, then a count.
    for name, source in undeclared[:2]:
        ui.warnings.append((
            "Value for undeclared variable",
            f'The root module does not declare a variable named "{name}" but a value was found in file '
            f'"{source}". If you meant to use this value, add a "variable" block to the configuration.\n\n'
            'To silence these warnings, use TF_VAR_... environment variables to provide certain "global" '
            "settings to all configurations in your organization. To reduce the verbosity of these "
            "warnings, use the -compact-warnings option."))
    if len(undeclared) > 2:
        ui.warnings.append(("Values for undeclared variables",
                            f"In addition to the other similar warnings shown, {len(undeclared) - 2} other "
                            "variable(s) defined without being declared."))

    result: dict[str, Any] = {}
    for name, spec in config.variables.items():
        if name in values:
            value = _convert(values[name], spec.get("type", "string"), name, spec["_file"])
        elif "default" in spec:
            value = spec["default"]
        else:
            raise TerraformError("No value for required variable",
                                 f'  on {spec["_file"]}:\n\nThe root module input variable "{name}" is not '
                                 'set, '
                                 "and has no default value. Use a -var or -var-file command line argument to "
                                 "provide a value for this variable.")
        for rule in spec.get("validation", []):
            if not _condition_holds(rule.get("condition", ""), name, value, spec["_file"]):
                raise TerraformError("Invalid value for variable",
                                     f"  on {spec['_file']}:\n\nvar.{name} is {json.dumps(value)}\n\n"
                                     f"{rule.get('error_message', 'The value is not valid.')}\n\n"
                                     f"This was checked by the validation rule at {spec['_file']}.")
        result[name] = value
    return result


def _convert(value: Any, vtype: str, name: str, fname: str) -> Any:
    def unsuitable(what: str) -> TerraformError:
        return TerraformError("Invalid value for input variable",
                              f"The given value is not suitable for var.{name} declared at {fname}: "
                              f"{what} required.")

    if vtype == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if not isinstance(value, str):
            raise unsuitable("string")
        return value
    if vtype == "number":
        if isinstance(value, bool):
            raise unsuitable("a number is")
        if isinstance(value, int | float):
            return value
        try:
            return int(value)
        except (TypeError, ValueError):
            try:
                return float(value)
            except (TypeError, ValueError):
                raise unsuitable("a number is") from None
    if vtype == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise unsuitable("bool")
    return value  # "any" and collection types: taken as given


def _condition_holds(condition: str, name: str, value: Any, fname: str) -> bool:
    expr = condition.strip()
    if expr.startswith("${") and expr.endswith("}"):
        expr = expr[2:-1].strip()
    ref = rf"var\.{re.escape(name)}"
    m = re.fullmatch(rf"contains\(\s*(\[.*\])\s*,\s*{ref}\s*\)", expr)
    if m:
        return value in json.loads(m.group(1))
    m = re.fullmatch(rf'can\(\s*regex\(\s*("(?:[^"\\]|\\.)*")\s*,\s*{ref}\s*\)\s*\)', expr)
    if m:
        return re.search(json.loads(m.group(1)), str(value)) is not None
    m = re.fullmatch(rf"length\(\s*{ref}\s*\)\s*(>=|<=|==|!=|>|<)\s*(\d+)", expr)
    if m:
        n, limit = len(value), int(m.group(2))
        return {">=": n >= limit, "<=": n <= limit, "==": n == limit, "!=": n != limit,
                ">": n > limit, "<": n < limit}[m.group(1)]
    raise TerraformError("Unsupported validation condition",
                         f"  on {fname}, in variable \"{name}\":\n\nThe Terraform stand-in evaluates "
                         'contains([...], var.x), can(regex("...", var.x)) and length(var.x) OP N only, '
                         f'not "{condition}".')


# --- expressions --------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
_ESCAPED = "\0escaped-interpolation\0"


def render(value: Any, variables: dict[str, Any], resources: dict[str, dict] | None, where: str) -> Any:
    """Substitute ``${var.NAME}`` (and, where ``resources`` is given, ``${TYPE.NAME.ATTR}``)."""
    if isinstance(value, dict):
        return {k: render(v, variables, resources, where) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, variables, resources, where) for v in value]
    if not isinstance(value, str):
        return value
    text = value.replace("$${", _ESCAPED)
    whole = _INTERPOLATION.fullmatch(text)
    if whole:  # a lone reference keeps its type, as in Terraform
        return _resolve(whole.group(1).strip(), variables, resources, where)

    def piece(m: re.Match) -> str:
        v = _resolve(m.group(1).strip(), variables, resources, where)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict | list):
            raise TerraformError("Invalid template interpolation value",
                                 f"  in {where}:\n\nCannot include the given value in a string template: "
                                 "string required.")
        return str(v)

    return _INTERPOLATION.sub(piece, text).replace(_ESCAPED, "${")


def _resolve(expr: str, variables: dict[str, Any], resources: dict[str, dict] | None, where: str) -> Any:
    m = re.fullmatch(r"var\.([A-Za-z_][\w-]*)", expr)
    if m:
        if m.group(1) not in variables:
            raise TerraformError("Reference to undeclared input variable",
                                 f'  in {where}:\n\nAn input variable with the name "{m.group(1)}" has not '
                                 'been '
                                 f'declared. This variable can be declared with a variable "{m.group(1)}" '
                                 f'{{}} block.')
        return variables[m.group(1)]
    m = re.fullmatch(r"([a-z][a-z0-9_]*)\.([A-Za-z_][\w-]*)\.([A-Za-z_]\w*)", expr)
    if m and resources is not None:
        address = f"{m.group(1)}.{m.group(2)}"
        if address not in resources:
            raise TerraformError("Reference to undeclared resource",
                                 f'  in {where}:\n\nA managed resource "{m.group(1)}" "{m.group(2)}" has '
                                 'not been '
                                 "declared in the root module.")
        attrs = resources[address]
        if m.group(3) not in attrs:
            raise TerraformError("Unsupported attribute",
                                 f'  in {where}:\n\nThis object has no argument, nested block, or exported '
                                 f'attribute named "{m.group(3)}".')
        return attrs[m.group(3)]
    allowed = "var.NAME" if resources is None else "var.NAME and TYPE.NAME.ATTRIBUTE"
    raise TerraformError("Unsupported expression",
                         f'  in {where}:\n\nThe Terraform stand-in evaluates {allowed} references only, '
                         f'not "{expr}".')


def resource_config(res: dict, variables: dict[str, Any]) -> tuple[dict, list[str]]:
    """The resource's attributes after substitution, and its force-new attribute names."""
    body = res["body"]
    force_new = body.get("_force_new", [])
    attrs = {k: v for k, v in body.items() if not k.startswith("_") and k not in META_ARGS}
    return render(attrs, variables, None, f"resource {res['type']}.{res['name']}"), list(force_new)


# --- state --------------------------------------------------------------------------------------


def state_path(directory: Path) -> Path:
    """Where the state lives. Like a real remote backend, an initialised ``s3`` backend keeps it outside
    the working directory when ``TF_STANDIN_BACKEND_DIR`` is set (at ``<dir>/<bucket>/<key>``), so a
    fresh checkout of the configuration, initialised the same way, sees the same state."""
    root = os.environ.get("TF_STANDIN_BACKEND_DIR")
    record_file = directory / ".terraform" / "terraform.tfstate"
    if root and record_file.is_file():
        backend = json.loads(record_file.read_text()).get("backend", {})
        conf = backend.get("config") or {}
        if backend.get("type") == "s3" and conf.get("bucket") and conf.get("key"):
            path = Path(root) / str(conf["bucket"]) / str(conf["key"])
            path.parent.mkdir(parents=True, exist_ok=True)
            return path
    return directory / STATE_FILE


def read_state(directory: Path) -> dict | None:
    path = state_path(directory)
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TerraformError("Failed to load state", f"Error reading {STATE_FILE}: {e.msg}.") from None
    if state.get("version") != 4:
        raise TerraformError("Failed to load state", "Unsupported state file format version "
                                                     f"{state.get('version')}.")
    return state


def write_state(directory: Path, state: dict) -> None:
    path = state_path(directory)
    if path.exists():  # Terraform keeps the previous state as a backup
        path.with_name(path.name + ".backup").write_bytes(path.read_bytes())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def state_resources(state: dict | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in (state or {}).get("resources", []):
        if r.get("mode") == "managed" and r.get("instances"):
            out[f"{r['type']}.{r['name']}"] = r["instances"][0]["attributes"]
    return out


def new_state(previous: dict | None) -> dict:
    return {
        "version": 4,
        "terraform_version": terraform_version(),
        "serial": (previous or {}).get("serial", 0),
        "lineage": (previous or {}).get("lineage") or str(uuid.uuid4()),
        "outputs": dict((previous or {}).get("outputs", {})),
        "resources": [dict(r) for r in (previous or {}).get("resources", [])],
        "check_results": None,
    }


def _state_entry(address: str, attrs: dict) -> dict:
    rtype, rname = address.split(".", 1)
    return {"mode": "managed", "type": rtype, "name": rname, "provider": f'provider["{AWS_PROVIDER}"]',
            "instances": [{"schema_version": 0, "attributes": attrs, "sensitive_attributes": []}]}


def _computed_id(address: str, attrs: dict) -> str:
    rtype = address.split(".", 1)[0]
    if rtype == "aws_security_group":
        return "sg-" + hashlib.sha256((address + json.dumps(attrs, sort_keys=True)).encode()).hexdigest()[:17]
    for key in ("identifier", "replication_group_id", "family", "name", "domain_name"):
        if isinstance(attrs.get(key), str):
            return attrs[key]
    return f"{rtype}-{uuid.uuid4().hex[:12]}"


class StateLock:
    """One Terraform process per working directory at a time, as the real state lock ensures."""

    def __init__(self, directory: Path, enabled: bool = True):
        self.path = directory / ".terraform.tfstate.lock.info"
        self.enabled = enabled
        self._fh = None

    def __enter__(self) -> StateLock:
        if not self.enabled:
            return self
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise TerraformError("Error acquiring the state lock",
                                 "Error message: resource temporarily unavailable\n\nTerraform acquires a "
                                 "state "
                                 "lock to protect the state from being written by multiple users at the same "
                                 "time. Please resolve the issue above and try again.") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self.path.unlink(missing_ok=True)


# --- backend / init -----------------------------------------------------------------------------


def _backend_block(config: Config) -> tuple[str, dict]:
    backends = config.terraform.get("backend") or {"local": {}}
    (btype, bconf), = backends.items()
    return btype, dict(bconf or {})


def _init_record(directory: Path) -> dict | None:
    path = directory / ".terraform" / "terraform.tfstate"
    return json.loads(path.read_text()) if path.is_file() else None


def require_init(config: Config) -> None:
    btype, _ = _backend_block(config)
    record = _init_record(config.directory)
    if record is None or record.get("backend", {}).get("type") != btype:
        reason = ("Initial configuration of the requested backend " f'"{btype}"' if record is None
                  else f'Backend type changed from "{record["backend"]["type"]}" to "{btype}"')
        raise TerraformError(
            'Backend initialization required, please run "terraform init"',
            f"Reason: {reason}\n\n"
            'The "backend" is the interface that Terraform uses to store state,\nperform operations, etc. If '
            "this message is showing up, it means that the\nTerraform configuration you're using is using a "
            "custom configuration for\nthe Terraform backend.\n\nChanges to backend configurations require "
            "reinitialization. This allows\nTerraform to set up the new configuration, copy existing state, "
            "etc. Please run\n\"terraform init\" with either the \"-reconfigure\" or \"-migrate-state\" "
            "flags "
            "to\nuse the current configuration.\n\nIf the change reason above is incorrect, please verify "
            "your "
            "configuration\nhasn't changed and try again. At this point, no changes to your existing\n"
            "configuration or state have been made.")


def cmd_init(directory: Path, args: list[str], ui: Ui) -> int:
    flags, _ = parse_flags(args, {"backend-config": "multi", "input": "bool", "no-color": "bool",
                                  "reconfigure": "bool", "migrate-state": "bool", "upgrade": "bool",
                                  "lock": "bool", "lock-timeout": "str", "backend": "bool",
                                  "get": "bool"})
    ui.color = not flags.get("no-color")
    config = load_config(directory)
    if not config.files:
        ui.out("Terraform initialized in an empty directory!\n\nThe directory has no Terraform configuration "
               "files. You may begin working\nwith Terraform immediately by creating Terraform "
               "configuration files.")
        return 0
    check_required_version(config)
    btype, bconf = _backend_block(config)
    for item in flags["backend-config"]:
        key, eq, value = item.partition("=")
        if not eq:
            raise TerraformError("Invalid backend configuration argument",
                                 f'The -backend-config option "{item}" is not a KEY=VALUE pair (the stand-in '
                                 "does not read backend configuration files).")
        bconf[key] = value
    for key in REQUIRED_BACKEND_ARGS.get(btype, ()):
        if not bconf.get(key):
            raise TerraformError("Missing required argument",
                                 f'The argument "{key}" is required, but was not set.')
    conf_hash = int(hashlib.sha256(json.dumps(bconf, sort_keys=True).encode()).hexdigest()[:8], 16)
    record = _init_record(directory)
    if (record is not None and record.get("backend", {}).get("hash") != conf_hash
            and not (flags.get("reconfigure") or flags.get("migrate-state"))):
        raise TerraformError("Backend configuration changed",
                             'A change in the backend configuration has been detected, which may require '
                             "migrating existing state.\n\nIf you wish to attempt automatic migration of the "
                             'state, use "terraform init -migrate-state".\nIf you wish to store the current '
                             'configuration with no changes to the state, use "terraform init -reconfigure".')
    dot = directory / ".terraform"
    dot.mkdir(exist_ok=True)
    (dot / "terraform.tfstate").write_text(json.dumps({
        "version": 3, "terraform_version": terraform_version(),
        "backend": {"type": btype, "config": bconf, "hash": conf_hash}}, indent=2) + "\n")
    ui.out("\nInitializing the backend...")
    if btype != "local":
        ui.out(f'\nSuccessfully configured the backend "{btype}"! Terraform will automatically\n'
               "use this backend unless the backend configuration changes.")
    ui.out("\nInitializing provider plugins...")
    if _uses_aws(config):
        ui.out(f"- Reusing previous version of hashicorp/aws from the dependency lock file\n"
               f"- Using previously-installed hashicorp/aws v{AWS_PROVIDER_VERSION}")
    ui.out("\nTerraform has been successfully initialized!\n\n"
           'You may now begin working with Terraform. Try running "terraform plan" to see\n'
           "any changes that are required for your infrastructure. All Terraform commands\nshould now work.")
    return 0


def _uses_aws(config: Config) -> bool:
    return any(r["type"].startswith("aws_") for r in config.resources.values())


# --- plan ---------------------------------------------------------------------------------------


def make_plan(config: Config, variables: dict[str, Any], state: dict | None) -> dict:
    prior = state_resources(state)
    changes: list[dict] = []
    planned: dict[str, dict] = {}
    for address, res in config.resources.items():
        after, force_new = resource_config(res, variables)
        before = prior.get(address)
        if before is None:
            actions, replace_paths = ["create"], []
            after = {**after, "id": _computed_id(address, after)}
        else:
            differing = sorted(k for k in set(after) | set(before)
                               if k not in COMPUTED and after.get(k) != before.get(k))
            replace_paths = [[k] for k in differing if k in force_new]
            if replace_paths:
                actions = ["delete", "create"]
                after = {**after, "id": _computed_id(address, after)}
            else:
                actions = ["update"] if differing else ["no-op"]
                after = {**after, **{k: before[k] for k in COMPUTED if k in before}}
        planned[address] = after
        change = _resource_change(address, res["type"], res["name"], actions, before, after)
        if replace_paths:
            change["action_reason"] = "replace_because_cannot_update"
            change["change"]["replace_paths"] = replace_paths
        changes.append(change)
    for address, before in reversed(list(prior.items())):
        if address not in config.resources:
            rtype, rname = address.split(".", 1)
            change = _resource_change(address, rtype, rname, ["delete"], before, None)
            change["action_reason"] = "delete_because_no_resource_config"
            changes.append(change)

    outputs = {name: render(spec.get("value"), variables, planned, f"output {name}")
               for name, spec in config.outputs.items()}
    old_outputs = {k: v["value"] for k, v in (state or {}).get("outputs", {}).items()}
    output_changes = {}
    for name in list(outputs) + [n for n in old_outputs if n not in outputs]:
        before_v, after_v = old_outputs.get(name), outputs.get(name)
        actions = (["create"] if name not in old_outputs else ["delete"] if name not in outputs
                   else ["no-op"] if before_v == after_v else ["update"])
        output_changes[name] = {"actions": actions, "before": before_v, "after": after_v,
                                "after_unknown": False, "before_sensitive": False, "after_sensitive": False}
    return {
        "format_version": "1.2",
        "terraform_version": terraform_version(),
        "variables": {k: {"value": v} for k, v in variables.items()},
        "planned_values": {
            "outputs": {k: {"sensitive": bool(config.outputs[k].get("sensitive")), "value": v}
                        for k, v in outputs.items()},
            "root_module": {"resources": [
                {"address": a, "mode": "managed", "type": a.split(".", 1)[0], "name": a.split(".", 1)[1],
                 "provider_name": AWS_PROVIDER, "schema_version": 0, "values": v, "sensitive_values": {}}
                for a, v in planned.items()]},
        },
        "resource_changes": changes,
        "output_changes": output_changes,
        "prior_state": _state_json(state) if state else None,
        "configuration": {"root_module": {
            "outputs": {k: {"expression": {"constant_value": v.get("value")}}
                        for k, v in config.outputs.items()},
            "variables": {k: {key: val for key, val in v.items() if not key.startswith("_")}
                          for k, v in config.variables.items()}}},
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "applyable": True,
        "complete": True,
        "errored": False,
        # The stand-in's own fields, for apply: which state this plan was made against.
        "standin": {"format": PLAN_FORMAT, "lineage": (state or {}).get("lineage"),
                    "serial": (state or {}).get("serial"),
                    "output_types": {k: _type_name(v) for k, v in outputs.items()},
                    "output_sensitive": {k: bool(v.get("sensitive")) for k, v in config.outputs.items()},
                    "files": {a: r["file"] for a, r in config.resources.items()}},
    }


def _resource_change(address, rtype, rname, actions, before, after) -> dict:
    return {"address": address, "mode": "managed", "type": rtype, "name": rname,
            "provider_name": AWS_PROVIDER,
            "change": {"actions": actions, "before": before, "after": after, "after_unknown": {},
                       "before_sensitive": {} if before is not None else False,
                       "after_sensitive": {} if after is not None else False}}


def _type_name(value: Any) -> Any:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return ["tuple", [_type_name(v) for v in value]]
    if isinstance(value, dict):
        return ["object", {k: _type_name(v) for k, v in value.items()}]
    return "dynamic"


def _state_json(state: dict) -> dict:
    """``terraform show -json`` of a state."""
    return {
        "format_version": "1.0",
        "terraform_version": state.get("terraform_version"),
        "values": {
            "outputs": {k: {"sensitive": bool(v.get("sensitive")), "value": v["value"], "type": v.get("type")}
                        for k, v in state.get("outputs", {}).items()},
            "root_module": {"resources": [
                {"address": a, "mode": "managed", "type": a.split(".", 1)[0], "name": a.split(".", 1)[1],
                 "provider_name": AWS_PROVIDER, "schema_version": 0, "values": attrs, "sensitive_values": {}}
                for a, attrs in state_resources(state).items()]},
        },
    }


def has_changes(plan: dict) -> bool:
    return (any(c["change"]["actions"] != ["no-op"] for c in plan["resource_changes"])
            or any(c["actions"] != ["no-op"] for c in plan["output_changes"].values()))


_SYMBOL = {("create",): "+", ("update",): "~", ("delete",): "-", ("delete", "create"): "-/+"}
_VERB = {("create",): "will be created", ("update",): "will be updated in-place",
         ("delete",): "will be destroyed", ("delete", "create"): "must be replaced"}


def _hcl(value: Any) -> str:
    return json.dumps(value)


def render_plan(plan: dict, ui: Ui) -> None:
    state = plan.get("prior_state")
    if state:
        for r in state["values"]["root_module"]["resources"]:
            ui.out(f"{r['address']}: Refreshing state... [id={r['values'].get('id')}]")
    if not has_changes(plan):
        ui.out("\nNo changes. Your infrastructure matches the configuration.\n\n"
               "Terraform has compared your real infrastructure against your configuration\n"
               "and found no differences, so no changes are needed.")
        return
    changed = [c for c in plan["resource_changes"] if c["change"]["actions"] != ["no-op"]]
    if changed:
        used = {tuple(c["change"]["actions"]) for c in changed}
        ui.out("\nTerraform used the selected providers to generate the following execution\n"
               "plan. Resource actions are indicated with the following symbols:")
        for acts, label in ((("create",), "create"), (("update",), "update in-place"),
                            (("delete",), "destroy"), (("delete", "create"), "destroy and then create "
                                                                             "replacement")):
            if acts in used:
                ui.out(f"{_SYMBOL[acts]:>3} {label}")
        ui.out("\nTerraform will perform the following actions:")
        for c in changed:
            acts = tuple(c["change"]["actions"])
            before, after = c["change"]["before"] or {}, c["change"]["after"] or {}
            ui.out(f"\n  # {c['address']} {_VERB[acts]}")
            ui.out(f'{_SYMBOL[acts]:>3} resource "{c["type"]}" "{c["name"]}" {{')
            forced = {p[0] for p in c["change"].get("replace_paths", [])}
            for key in sorted(set(before) | set(after)):
                b, a = before.get(key), after.get(key)
                if acts == ("create",):
                    ui.out(f"      + {key} = {_hcl(a)}")
                elif acts == ("delete",):
                    ui.out(f"      - {key} = {_hcl(b)} -> null")
                elif a != b:
                    note = " # forces replacement" if key in forced else ""
                    ui.out(f"      ~ {key} = {_hcl(b)} -> {_hcl(a)}{note}")
            ui.out("    }")
    add = sum(1 for c in changed if "create" in c["change"]["actions"])
    chg = sum(1 for c in changed if c["change"]["actions"] == ["update"])
    dst = sum(1 for c in changed if "delete" in c["change"]["actions"])
    if changed:
        ui.out(f"\nPlan: {add} to add, {chg} to change, {dst} to destroy.")
    out_changes = {k: v for k, v in plan["output_changes"].items() if v["actions"] != ["no-op"]}
    if out_changes:
        ui.out("\nChanges to Outputs:")
        for name, oc in out_changes.items():
            sym = {"create": "+", "update": "~", "delete": "-"}[oc["actions"][0]]
            shown = (_hcl(oc["after"]) if sym == "+" else f"{_hcl(oc['before'])} -> null" if sym == "-"
                     else f"{_hcl(oc['before'])} -> {_hcl(oc['after'])}")
            ui.out(f"  {sym} {name} = {shown}")
        if not changed:
            ui.out("\nYou can apply this plan to save these new output values to the Terraform\n"
                   "state, without changing any real infrastructure.")


def _prepare(directory: Path, flags: dict, ui: Ui) -> tuple[Config, dict[str, Any]]:
    config = load_config(directory)
    if not config.files:
        raise TerraformError("No configuration files",
                             "Plan requires configuration to be present. Planning without a configuration "
                             "would "
                             "mark everything for destruction, which is normally not what is desired. If you "
                             "would like to destroy everything, run plan with the -destroy option. "
                             "Otherwise, "
                             "create a Terraform configuration file (.tf file) and try again.")
    check_required_version(config)
    require_init(config)
    variables = resolve_variables(config, flags.get("var-file", []), flags.get("var", []), ui)
    return config, variables


PLAN_FLAGS = {"out": "str", "detailed-exitcode": "bool", "var-file": "multi", "var": "multi", "input": "bool",
              "no-color": "bool", "lock": "bool", "lock-timeout": "str", "refresh": "bool",
              "parallelism": "str", "compact-warnings": "bool"}


def cmd_plan(directory: Path, args: list[str], ui: Ui) -> int:
    flags, rest = parse_flags(args, PLAN_FLAGS)
    ui.color = not flags.get("no-color")
    if rest:
        raise TerraformError("Too many command line arguments",
                             "To specify a working directory for the plan, use the global -chdir flag.")
    config, variables = _prepare(directory, flags, ui)
    with StateLock(directory, flags.get("lock", True)):
        state = read_state(directory)
        plan = make_plan(config, variables, state)
    ui.flush_warnings()
    render_plan(plan, ui)
    if flags.get("out"):
        out = Path(flags["out"]) if Path(flags["out"]).is_absolute() else directory / flags["out"]
        out.write_text(json.dumps(plan, indent=2) + "\n")
        ui.out(f"\n{RULE}\n\nSaved the plan to: {flags['out']}\n\nTo perform exactly these actions, run the "
               f'following command to apply:\n    terraform apply "{flags["out"]}"')
    elif has_changes(plan):
        ui.out(f"\n{RULE}\n\nNote: You didn't use the -out option to save this plan, so Terraform can't\n"
               'guarantee to take exactly these actions if you run "terraform apply" now.')
    if flags.get("detailed-exitcode") and has_changes(plan):
        return 2
    return 0


def read_plan_file(directory: Path, name: str) -> dict:
    path = Path(name) if Path(name).is_absolute() else directory / name
    try:
        plan = json.loads(path.read_text())
        if plan.get("standin", {}).get("format") != PLAN_FORMAT:
            raise ValueError
    except FileNotFoundError:
        raise TerraformError("Failed to load plan file",
                             f"Failed to read plan from plan file: open {name}: no such file or "
                             "directory") from None
    except (ValueError, AttributeError):
        raise TerraformError("Failed to read the given file as a state or plan file",
                             f"State read error: the file {name} is not a state file\n\n"
                             f"Plan read error: the file {name} is not a saved plan (zip: not a valid zip "
                             "file)"
                             ) from None
    return plan


def cmd_show(directory: Path, args: list[str], ui: Ui) -> int:
    flags, rest = parse_flags(args, {"json": "bool", "no-color": "bool"})
    ui.color = not flags.get("no-color")
    if not flags.get("json"):
        raise TerraformError("Unsupported option", "The Terraform stand-in shows plans and state with "
                                                   "-json only.")
    if len(rest) > 1:
        raise TerraformError("Too many command line arguments", "Expected at most one positional argument.")
    if rest:
        plan = read_plan_file(directory, rest[0])
        print(json.dumps({k: v for k, v in plan.items() if k != "standin"}))
        return 0
    require_init(load_config(directory))
    state = read_state(directory)
    print(json.dumps(_state_json(state) if state else {"format_version": "1.0"}))
    return 0


# --- apply --------------------------------------------------------------------------------------


class InjectedFailure(Exception):
    def __init__(self, address: str, actions: list[str]):
        super().__init__(address)
        self.address = address
        self.actions = actions


def _apply_plan(directory: Path, plan: dict, state: dict | None, ui: Ui) -> dict:
    fail_after = os.environ.get("TF_STANDIN_FAIL_APPLY_AFTER")
    budget = int(fail_after) if fail_after not in (None, "") else None
    new = new_state(state)
    by_address = {f"{r['type']}.{r['name']}": r for r in new["resources"]}
    counts = {"added": 0, "changed": 0, "destroyed": 0}
    done = 0
    try:
        for c in plan["resource_changes"]:
            acts, address = c["change"]["actions"], c["address"]
            if acts == ["no-op"]:
                continue
            if budget is not None and done >= budget:
                raise InjectedFailure(address, acts)
            before, after = c["change"]["before"], c["change"]["after"]
            if "delete" in acts:
                ui.out(f"{address}: Destroying... [id={before.get('id')}]")
                by_address.pop(address, None)
                ui.out(f"{address}: Destruction complete after 0s")
                counts["destroyed"] += 1
            if "create" in acts:
                ui.out(f"{address}: Creating...")
                by_address[address] = _state_entry(address, after)
                ui.out(f"{address}: Creation complete after 0s [id={after.get('id')}]")
                counts["added"] += 1
            if acts == ["update"]:
                ui.out(f"{address}: Modifying... [id={after.get('id')}]")
                by_address[address] = _state_entry(address, after)
                ui.out(f"{address}: Modifications complete after 0s [id={after.get('id')}]")
                counts["changed"] += 1
            done += 1
    except InjectedFailure as failed:
        new["resources"] = list(by_address.values())
        new["serial"] += 1
        write_state(directory, new)
        verb = {"create": "creating", "update": "updating", "delete": "deleting"}[failed.actions[0]]
        raise TerraformError(
            f"{verb} {failed.address}: operation error: https response error StatusCode: 500, "
            "api error InternalFailure: injected by TF_STANDIN_FAIL_APPLY_AFTER",
            f"  with {failed.address},\n  on "
            f"{plan['standin']['files'].get(failed.address, 'the configuration')}"
        ) from None
    new["resources"] = list(by_address.values())
    types = plan["standin"]["output_types"]
    sensitive = plan["standin"]["output_sensitive"]
    new["outputs"] = {}
    for name, spec in plan["planned_values"]["outputs"].items():
        entry = {"value": spec["value"], "type": types.get(name, "string")}
        if sensitive.get(name):
            entry["sensitive"] = True
        new["outputs"][name] = entry
    new["serial"] += 1
    write_state(directory, new)
    ui.out(f"\nApply complete! Resources: {counts['added']} added, {counts['changed']} changed, "
           f"{counts['destroyed']} destroyed.")
    if new["outputs"]:
        ui.out("\nOutputs:\n")
        for name, entry in new["outputs"].items():
            shown = "<sensitive>" if entry.get("sensitive") else _hcl(entry["value"])
            ui.out(f"{name} = {shown}")
    return new


def cmd_apply(directory: Path, args: list[str], ui: Ui) -> int:
    flags, rest = parse_flags(args, {**PLAN_FLAGS, "auto-approve": "bool"})
    ui.color = not flags.get("no-color")
    if len(rest) > 1:
        raise TerraformError("Too many command line arguments", "Expected at most one positional argument.")
    if rest:
        if flags["var"] or flags["var-file"]:
            raise TerraformError("Can't set variables when applying a saved plan",
                                 "The -var and -var-file options cannot be used when applying a saved plan "
                                 "file, "
                                 "because a saved plan includes the variable values that were set when it "
                                 "was "
                                 "created.")
        plan = read_plan_file(directory, rest[0])
        require_init(load_config(directory))
        with StateLock(directory, flags.get("lock", True)):
            state = read_state(directory)
            current = ((state or {}).get("lineage"), (state or {}).get("serial"))
            planned_against = (plan["standin"]["lineage"], plan["standin"]["serial"])
            if current != planned_against:
                raise TerraformError("Saved plan is stale",
                                     "The given plan file can no longer be applied because the state was "
                                     "changed by "
                                     "another operation after the plan was created.")
            ui.flush_warnings()
            _apply_plan(directory, plan, state, ui)
        return 0
    if not flags.get("auto-approve"):
        raise TerraformError("No saved plan and no approval",
                             "Applying without a saved plan needs interactive approval, which -input=false "
                             "(and "
                             "this stand-in) cannot give. Apply a saved plan file, or add -auto-approve.")
    config, variables = _prepare(directory, flags, ui)
    with StateLock(directory, flags.get("lock", True)):
        state = read_state(directory)
        plan = make_plan(config, variables, state)
        ui.flush_warnings()
        render_plan(plan, ui)
        if has_changes(plan):
            ui.out("")
            _apply_plan(directory, plan, state, ui)
        else:
            ui.out("\nApply complete! Resources: 0 added, 0 changed, 0 destroyed.")
    return 0


# --- output, validate, version ------------------------------------------------------------------


def cmd_output(directory: Path, args: list[str], ui: Ui) -> int:
    flags, rest = parse_flags(args, {"json": "bool", "raw": "bool", "no-color": "bool", "state": "str"})
    ui.color = not flags.get("no-color")
    if flags.get("json") and flags.get("raw"):
        raise TerraformError("Invalid output format", "The -raw and -json options are mutually-exclusive.")
    require_init(load_config(directory))
    outputs = (read_state(directory) or {}).get("outputs", {})
    if rest:
        name = rest[0]
        if name not in outputs:
            raise TerraformError(f'Output "{name}" not found',
                                 "The output variable requested could not be found in the state file. If you "
                                 'recently added this to your configuration, be sure to run "terraform '
                                 'apply", '
                                 "since the state won't be updated with new output variables until that "
                                 "command "
                                 "is run.")
        value = outputs[name]["value"]
        if flags.get("json"):
            print(json.dumps(value))
        elif flags.get("raw"):
            if not isinstance(value, str | int | float | bool):
                raise TerraformError("Unsupported value for raw output",
                                     "The -raw option only supports strings, numbers, and boolean values.")
            sys.stdout.write(("true" if value else "false") if isinstance(value, bool) else str(value))
        else:
            print(_hcl(value))
        return 0
    if flags.get("json"):
        print(json.dumps({k: {"sensitive": bool(v.get("sensitive")), "type": v.get("type", "string"),
                              "value": v["value"]} for k, v in sorted(outputs.items())}, indent=2))
        return 0
    if not outputs:
        ui.diagnostic("Warning", "No outputs found",
                      "The state file either has no outputs defined, or all the defined outputs are empty. "
                      "Please define an output in your configuration with the `output` keyword and run "
                      "`terraform refresh` for it to become available. If you are using interpolation, "
                      "please "
                      "verify the interpolated value is not empty. You can use the `terraform console` "
                      "command "
                      "to assist.", sys.stderr)
        return 0
    for name, v in sorted(outputs.items()):
        print(f"{name} = {'<sensitive>' if v.get('sensitive') else _hcl(v['value'])}")
    return 0


def cmd_validate(directory: Path, args: list[str], ui: Ui) -> int:
    flags, _ = parse_flags(args, {"json": "bool", "no-color": "bool"})
    ui.color = not flags.get("no-color")
    try:
        config = load_config(directory)
        check_required_version(config)
        require_init(config)
        for name, spec in config.variables.items():  # defaults must pass their own rules
            for rule in spec.get("validation", []) if "default" in spec else []:
                if not _condition_holds(rule.get("condition", ""), name, spec["default"], spec["_file"]):
                    raise TerraformError("Invalid default value for variable", rule.get("error_message", ""))
        names = {k: "x" if v.get("type", "string") == "string" else v.get("default", 0)
                 for k, v in config.variables.items()}
        for res in config.resources.values():
            resource_config(res, names)
    except TerraformError as e:
        if flags.get("json"):
            diagnostic = {"severity": "error", "summary": e.summary, "detail": e.detail}
            print(json.dumps({"format_version": "1.0", "valid": False, "error_count": 1, "warning_count": 0,
                              "diagnostics": [diagnostic]}))
            return 1
        raise
    if flags.get("json"):
        print(json.dumps({"format_version": "1.0", "valid": True, "error_count": 0, "warning_count": 0,
                          "diagnostics": []}))
    else:
        ui.out("Success! The configuration is valid.\n")
    return 0


def cmd_version(directory: Path, args: list[str], ui: Ui) -> int:
    flags, _ = parse_flags(args, {"json": "bool"})
    selections = {}
    try:
        if _init_record(directory) is not None and _uses_aws(load_config(directory)):
            selections = {AWS_PROVIDER: AWS_PROVIDER_VERSION}
    except TerraformError:
        pass
    if flags.get("json"):
        print(json.dumps({"terraform_version": terraform_version(), "platform": "linux_amd64",
                          "provider_selections": selections, "terraform_outdated": False}, indent=2))
    else:
        print(f"Terraform v{terraform_version()}\non linux_amd64")
        for provider, version in selections.items():
            print(f"+ provider {provider} v{version}")
    return 0


COMMANDS = {"init": cmd_init, "plan": cmd_plan, "apply": cmd_apply, "show": cmd_show, "output": cmd_output,
            "validate": cmd_validate, "version": cmd_version}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    ui = Ui(color="-no-color" not in args)
    directory = Path.cwd()
    try:
        while args and args[0].startswith("-"):
            opt = args.pop(0)
            if opt.startswith("-chdir="):
                directory = Path(opt.split("=", 1)[1])
                if not directory.is_dir():
                    raise TerraformError("Invalid -chdir option",
                                         f"The -chdir option {opt.split('=', 1)[1]!r} does not refer to a "
                                         "directory.")
            elif opt in ("-version", "--version", "-v"):
                args = ["version"]
            else:
                raise TerraformError("Failed to parse command-line flags", "flag provided but not "
                                                                           f"defined: {opt}")
        if not args:
            print("Usage: terraform [global options] <subcommand> [args]", file=sys.stderr)
            return 127
        command, rest = args[0], args[1:]
        if command not in COMMANDS:
            print(f'Terraform has no command named "{command}".\n\nTo see all of Terraform\'s top-level '
                  'commands, '
                  'run:\n  terraform -help\n', file=sys.stderr)
            return 1
        return COMMANDS[command](directory.resolve(), rest, ui)
    except TerraformError as e:
        ui.flush_warnings()
        ui.error(e)
        return e.exit_code


# --- for the launcher ---------------------------------------------------------------------------

SANDBOX_CONFIG_DIR = Path(__file__).resolve().parent / "terraform"
TERRAFORM_BIN = Path(__file__).resolve().parent / "bin" / "terraform"
SANDBOX_TFVARS = "sandbox.auto.tfvars.json"


def sandbox_tfvars(ports: dict[str, int], aws: dict[str, str] | Any = None) -> dict[str, Any]:
    """The ``sandbox_*`` variables of ``include/bisman_sandbox/terraform``: the sandbox's ports (from
    ``SandboxContext.ports``) and what the moto seeding created (a mapping or an object with attributes
    app_secrets_arn, alb_arn, alb_dns_name, certificate_arn, waf_web_acl_arn, db_security_group_id)."""
    values: dict[str, Any] = {
        "sandbox_app_port": ports["app"],
        "sandbox_pgbouncer_port": ports["pgbouncer"],
        "sandbox_redis_port": ports["redis_primary"],
        "sandbox_db_primary_port": ports["postgres_primary"],
        "sandbox_db_replica_port": ports["postgres_replica"],
    }
    for key in ("app_secrets_arn", "alb_arn", "alb_dns_name", "certificate_arn", "waf_web_acl_arn",
                "db_security_group_id"):
        value = aws.get(key) if isinstance(aws, dict) else getattr(aws, key, None)
        if value:
            values[f"sandbox_{key}"] = value
    return values


def write_sandbox_tfvars(workdir: Path, ports: dict[str, int], aws: dict[str, str] | Any = None) -> Path:
    """Write ``sandbox.auto.tfvars.json`` into a working copy of the configuration (read automatically)."""
    path = Path(workdir) / SANDBOX_TFVARS
    path.write_text(json.dumps(sandbox_tfvars(ports, aws), indent=2) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
