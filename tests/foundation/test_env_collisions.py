"""No stack.yml ``environment:`` key and no variable our code reads is one the OpenFaaS runtime owns.

In a python3-http pod the handler shares its environment with of-watchdog (PID 1) and
the template's Dockerfile ``ENV``: stack.yml's ``mode: report`` reconfigured the
watchdog, which panicked "unknown watchdog mode", and without it the handler read the
template's ``mode=http``. The list of names lives in bootstrap (its preflight checks
a user's stack.yml with it); here it is held to ../shared/tools/README.md, the real
binary and the real template, and the repository is held to it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from local import components, launch, stackfile

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bootstrap"))
from edgeguard_bootstrap import runtime_env  # noqa: E402

COMPONENTS = components.locate()
STACK = stackfile.load()
# Read by our code and by the watchdog with the same meaning, set by the platform, never by stack.yml.
SHARED_ON_PURPOSE = {"OPENFAAS_NAME": "the function's name (the watchdog's jwt_auth reads it too); set by the platform"}


def needs(path, what: str):
    return pytest.mark.skipif(path is None, reason=components.needs_real(what))


# ---------------------------------------------------------------- the list, held to the real parts


@needs(COMPONENTS.tools, "../shared/tools (its README.md lists the watchdog's variables; set EDGEGUARD_TOOLS)")
def test_the_list_holds_every_variable_the_tools_readme_names():
    text = (COMPONENTS.tools / "README.md").read_text()
    reads = re.search(r"The watchdog reads many environment variables itself\s*\((.*?)\)", text, re.S).group(1)
    named = set(re.findall(r"`([A-Za-z_]+)`", reads))
    assert {"mode", "port", "upstream_url", "exec_timeout", "jwt_auth"} <= named  # the parse found the list
    assert named <= runtime_env.WATCHDOG_READS, named - runtime_env.WATCHDOG_READS
    sets = set(re.findall(r"`([a-z_]+)=", text.split("How a function runs in its real image", 1)[1]))
    assert {"fprocess", "mode", "upstream_url"} <= sets <= runtime_env.OWNED, sets


@needs(COMPONENTS.watchdog, "of-watchdog (EDGEGUARD_WATCHDOG or EDGEGUARD_TOOLS)")
def test_every_watchdog_variable_is_named_in_the_real_binary():
    binary = COMPONENTS.watchdog.read_bytes()
    absent = sorted(n for n in runtime_env.WATCHDOG_READS if n.encode() not in binary)
    assert absent == [], f"not in {COMPONENTS.watchdog}: {absent}"
    # ... and the binary still reads names our list lacks? These are the ones its source adds since config.go:
    for newer in ("ready_path", "jwt_auth_local", "log_buffer_size", "metrics_port"):
        assert newer.encode() in binary


@needs(COMPONENTS.template, "the python3-http template folder (EDGEGUARD_TEMPLATE or EDGEGUARD_TOOLS)")
def test_the_template_sets_and_reads_what_the_list_says():
    image = launch.image_env(COMPONENTS.template)
    assert set(image) | {"PATH"} == runtime_env.TEMPLATE_SETS, image
    index = (COMPONENTS.template / "index.py").read_text()
    read = set(re.findall(r"os\.(?:getenv|environ\.get)\(\s*['\"]([^'\"]+)['\"]", index))
    assert read == runtime_env.TEMPLATE_READS


# ---------------------------------------------------------------- the repository, held to the list


@pytest.mark.parametrize("name", sorted(STACK.functions))
def test_stack_yml_environment_sets_no_variable_the_runtime_owns(name):
    env = STACK.functions[name].environment
    assert runtime_env.collisions(env) == [], (
        f"{name}: environment sets {runtime_env.collisions(env)}, which of-watchdog or the template reads or sets"
    )


def _env_reads(paths) -> tuple[set[str], list[str]]:
    """Names of every environment variable read under ``paths``: direct reads and helpers that pass a name on.

    A read whose name is neither a string literal nor the parameter of a helper that is
    itself called with literals is reported as unresolved, so the guard cannot go blind.
    """
    trees = {p: ast.parse(p.read_text(), str(p)) for p in paths}
    readers = {"getenv"}  # os.getenv, os.environ.get, os.environ[...]; grows with helpers taking a name

    def is_env_read(call):
        f = call.func
        if isinstance(f, ast.Attribute) and f.attr == "get":
            return isinstance(f.value, ast.Attribute) and f.value.attr == "environ"
        return (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)) in readers

    forwarded = set()  # (path, line) of reads inside a helper, naming the helper's parameter
    changed = True
    while changed:  # a function passing its own parameter to an env read is itself an env read
        changed = False
        for path, tree in trees.items():
            for fn in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
                params = [a.arg for a in fn.args.args]
                for call in [n for n in ast.walk(fn) if isinstance(n, ast.Call) and is_env_read(n)]:
                    if call.args and isinstance(call.args[0], ast.Name) and call.args[0].id in params:
                        forwarded.add((path, call.lineno))
                        if fn.name not in readers:
                            readers.add(fn.name)
                            changed = True
    names, unresolved = set(), []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "environ"
            ):
                key = node.slice
                (names.add(key.value) if isinstance(key, ast.Constant) else unresolved.append(f"{path}:{node.lineno}"))
            if isinstance(node, ast.Call) and is_env_read(node):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.add(arg.value)
                elif (path, node.lineno) not in forwarded:
                    unresolved.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return names, unresolved


CODE = sorted(p for d in ("functions", "edgeguard") for p in (ROOT / d).rglob("*.py"))


def test_the_code_reads_no_variable_the_runtime_owns():
    names, unresolved = _env_reads(CODE)
    assert unresolved == [], f"environment reads whose name the guard cannot see: {unresolved}"
    assert {"spool_dir", "max_clock_skew", "EDGEGUARD_SECRETS_DIR", "namespaces_allow"} <= names  # it sees
    clash = sorted((names & runtime_env.OWNED) - set(SHARED_ON_PURPOSE))
    assert clash == [], f"functions/ or edgeguard/ read {clash}, which of-watchdog or the template owns"


def test_watchdog_settings_in_stack_yml_are_read_by_the_watchdog_only():
    names, _ = _env_reads(CODE)
    tuning = {k for fn in STACK.functions.values() for k in fn.environment} & runtime_env.WATCHDOG_TUNING
    assert tuning == {"exec_timeout", "read_timeout", "write_timeout", "healthcheck_interval"}
    assert not tuning & names, "these configure the watchdog; a handler reading them shares the watchdog's value"


def test_bootstraps_stdlib_reader_sees_every_environment_key_yaml_sees(tmp_path):
    keys = runtime_env.stack_environment_keys(STACK.raw_text)
    assert keys == {n: list(fn.environment) for n, fn in STACK.functions.items()}
    flow = "functions:\n  f:\n    lang: python3-http\n    environment: {mode: report, a: b}\n"
    assert runtime_env.stack_environment_keys(flow) == {"f": ["mode", "a"]}
    assert yaml.safe_load(flow)["functions"]["f"]["environment"] == {"mode": "report", "a": "b"}
