"""Environment variables the OpenFaaS python3-http runtime owns, and a stack.yml check against them.

A function's ``environment:`` entries land in the same process environment as the
image's own settings, and of-watchdog (PID 1 of every python3-http image) reads
many of them itself: a stack.yml key with one of these names reconfigures the
watchdog instead of reaching the handler. ``mode: report`` did exactly that: the
watchdog panicked with "unknown watchdog mode" and the function never started.

Sources: ../shared/tools/README.md (the list it gives), openfaas/of-watchdog
``config/config.go`` and ``main.go``/``pkg`` (read with the project's search tool),
the python3-http template's Dockerfile and index.py at the commit stack.yml pins,
and the strings of the real binary (tests/foundation/test_env_collisions.py checks
each watchdog name against it).
"""

from __future__ import annotations

import re

# Read by of-watchdog itself (of-watchdog 9bdadb1; metrics_port is ../shared/tools' one patch).
WATCHDOG_READS = frozenset(
    {
        "mode",
        "port",
        "metrics_port",
        "upstream_url",
        "http_upstream_url",
        "fprocess",
        "function_process",
        "exec_timeout",
        "read_timeout",
        "write_timeout",
        "healthcheck_interval",
        "ready_path",
        "content_type",
        "static_path",
        "suppress_lock",
        "buffer_http",
        "http_buffer_req_body",
        "max_inflight",
        "prefix_logs",
        "log_buffer_size",
        "jwt_auth",
        "jwt_auth_debug",
        "jwt_auth_local",
        "OPENFAAS_NAME",
        "OPENFAAS_NAMESPACE",
        # Go's runtime and net/http read these too: the lock file goes to $TMPDIR, the upstream proxy from *_proxy.
        "TMPDIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "GOMAXPROCS",
        "GOGC",
        "GOMEMLIMIT",
        "GODEBUG",
        "GOTRACEBACK",
    }
)
# Set by the template's Dockerfile (ENV in the ship stage) or read by its index.py.
TEMPLATE_SETS = frozenset({"fprocess", "cgi_headers", "mode", "upstream_url", "PATH"})
TEMPLATE_READS = frozenset({"HOSTNAME"})
OWNED = WATCHDOG_READS | TEMPLATE_SETS | TEMPLATE_READS

# Watchdog settings stack.yml sets on purpose, for the watchdog (no function code reads them).
WATCHDOG_TUNING = frozenset({"exec_timeout", "read_timeout", "write_timeout", "max_inflight", "healthcheck_interval"})


def collisions(environment: dict | list) -> list[str]:
    """The keys of one function's ``environment:`` that the runtime owns and stack.yml may not set."""
    return sorted(k for k in environment if k in OWNED and k not in WATCHDOG_TUNING)


_FUNCTION = re.compile(r"^(?P<indent> +)(?P<name>[a-z0-9][-a-z0-9]*)\s*:\s*(#.*)?$")
_KEY = re.compile(r"^(?P<indent> +)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*:")
_FLOW = re.compile(r"^ +environment\s*:\s*\{(?P<body>.*)\}\s*(#.*)?$")


def stack_environment_keys(text: str) -> dict[str, list[str]]:
    """``{function: [environment keys]}`` from a stack.yml, without a YAML library (bootstrap is stdlib only).

    Reads the block style faas-cli writes and the one-line ``environment: {a: b}`` form;
    other YAML forms are not understood and give no keys.
    """
    result: dict[str, list[str]] = {}
    lines = text.splitlines()
    in_functions, fn_indent, fn = False, None, None
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^functions\s*:", line):
            in_functions, fn_indent, fn = True, None, None
        elif line and not line.startswith((" ", "#")):
            in_functions = False
        elif in_functions:
            m = _FUNCTION.match(line)
            if m and (fn_indent is None or len(m.group("indent")) == fn_indent):
                fn_indent, fn = len(m.group("indent")), m.group("name")
                result.setdefault(fn, [])
            elif fn is not None and (flow := _FLOW.match(line)):
                pairs = [p for p in flow.group("body").split(",") if ":" in p]
                result[fn] += [p.split(":", 1)[0].strip().strip("'\"") for p in pairs]
            elif fn is not None and re.match(r"^ +environment\s*:\s*(#.*)?$", line):
                env_indent = len(line) - len(line.lstrip())
                key_indent = None
                i += 1
                while i < len(lines):
                    sub = lines[i]
                    if sub.strip() and not sub.lstrip().startswith("#"):
                        depth = len(sub) - len(sub.lstrip())
                        if depth <= env_indent:
                            break
                        k = _KEY.match(sub)
                        if k and (key_indent is None or depth == key_indent):
                            key_indent = depth
                            result[fn].append(k.group("key").strip("'\""))
                    i += 1
                continue
        i += 1
    return result
