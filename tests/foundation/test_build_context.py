"""Every function's build context, laid out as faas-cli lays it, serves HTTP under the template contract."""
import importlib.metadata
import json
import re

import pytest
import requests

from local import buildctx, stackfile

STACK = stackfile.load()
FUNCTIONS = sorted(STACK.functions)


def test_all_four_functions_are_covered():
    assert FUNCTIONS == ["alert-forwarder", "audit-ingest", "configmap-secret-scrubber", "node-enroll"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_context_layout_matches_faas_cli_shrinkwrap(name, tmp_path):
    ctx = buildctx.assemble(STACK.functions[name], STACK, tmp_path)
    fdir = ctx / "function"
    assert (fdir / "handler.py").is_file() and (fdir / "requirements.txt").is_file()
    assert (fdir / "__init__.py").is_file(), "the template's Dockerfile touches function/__init__.py"
    assert (fdir / "edgeguard" / "__init__.py").is_file(), "configuration.copy puts ./edgeguard under function/"
    assert not list(ctx.rglob("__pycache__"))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_requirements_are_satisfiable_from_the_project_environment(name):
    for line in (STACK.functions[name].handler / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            dist = re.split(r"[<>=!~\[ ]", line.strip(), 1)[0]
            assert importlib.metadata.version(dist)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_context_serves_and_refuses_anonymous_callers_with_json(name, serve_function):
    fn = serve_function(name)
    r = requests.post(fn.url + "/", data=b"{}", headers={"Content-Type": "application/json"}, timeout=10)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert "Traceback" not in r.text
    # No secret mounted: the function must fail closed, never serve an anonymous caller.
    assert r.status_code in (401, 503), body
    assert body["error"]
