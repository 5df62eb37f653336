"""Every function's build context, laid out as faas-cli lays it, serves HTTP under the template contract."""

import importlib.metadata
import re
from pathlib import Path

import pytest
import requests

from local import buildctx, components, shrinkwrap, stackfile

STACK = stackfile.load()
FUNCTIONS = sorted(STACK.functions)
TOOLS = components.locate()
NO_FAAS_CLI = (
    components.needs_real(
        "faas-cli and the python3-http template folder (EDGEGUARD_FAAS_CLI, EDGEGUARD_TEMPLATE or EDGEGUARD_TOOLS)"
    )
    if TOOLS.faas_cli is None or TOOLS.template is None
    else None
)


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
            dist = re.split(r"[<>=!~\[ ]", line.strip(), maxsplit=1)[0]
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


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path, without bytecode caches: faas-cli copies __pycache__ folders
    when the sources have them (buildctx leaves them out; they are not part of the function)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def faas_cli_contexts(tmp_path_factory):
    root = tmp_path_factory.mktemp("faas-cli") / "root"
    built = shrinkwrap.build(STACK, faas_cli=TOOLS.faas_cli, template=TOOLS.template, root=root)
    for ctx in built.values():
        (ctx / "function" / "__init__.py").touch()  # the template's Dockerfile step, which buildctx also takes
    return built


@pytest.mark.skipif(NO_FAAS_CLI is not None, reason=NO_FAAS_CLI or "")
@pytest.mark.parametrize("name", FUNCTIONS)
def test_buildctx_lays_out_function_byte_for_byte_as_the_real_faas_cli(name, tmp_path, faas_cli_contexts):
    ours = buildctx.assemble(STACK.functions[name], STACK, tmp_path, template=TOOLS.template)
    theirs = _tree(faas_cli_contexts[name] / "function")
    mine = _tree(ours / "function")
    assert sorted(mine) == sorted(theirs)
    assert [k for k in theirs if theirs[k] != mine[k]] == []
    assert {"handler_test.py", "tox.ini"} <= set(theirs), "faas-cli lays the template's scaffold under function/"


@pytest.mark.skipif(NO_FAAS_CLI is not None, reason=NO_FAAS_CLI or "")
@pytest.mark.parametrize("name", FUNCTIONS)
def test_without_a_template_folder_only_the_templates_scaffold_files_are_missing(name, tmp_path, faas_cli_contexts):
    mine = _tree(buildctx.assemble(STACK.functions[name], STACK, tmp_path) / "function")
    theirs = _tree(faas_cli_contexts[name] / "function")
    scaffold = {p.name for p in (TOOLS.template / "function").iterdir()} - {
        p.name for p in STACK.functions[name].handler.iterdir()
    }
    assert set(theirs) - set(mine) == scaffold and scaffold <= {
        "handler_test.py",
        "tox.ini",
        "handler.py",
        "requirements.txt",
    }
    assert all(theirs[k] == mine[k] for k in mine)
