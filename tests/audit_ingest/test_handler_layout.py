"""audit-ingest's shape: settings read once at start-up, and the image ships only what the code imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from .conftest import post
from .test_handler import anon, eventlist, health

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "audit-ingest"
DISTRIBUTIONS = {"yaml": "pyyaml"}  # import name -> requirements.txt name


def test_a_bad_setting_is_a_503_naming_the_variable_on_every_request(ingest, make_event, forwarder):
    mod = ingest(env={"max_body_bytes": "12MB"})
    for _ in range(2):
        status, reply = post(mod, make_event, eventlist(anon(1)))
        assert status == 503, reply
        assert reply["error"] == (
            "audit-ingest is misconfigured: environment variable max_body_bytes='12MB' is not an integer"
        )
    assert health(mod, make_event)[0] == 503
    assert forwarder.requests == []


def test_an_unknown_min_priority_is_a_503_naming_the_variable(ingest, make_event):
    mod = ingest(env={"min_priority": "loud"})
    status, reply = post(mod, make_event, anon(2))
    assert status == 503 and "environment variable min_priority" in reply["error"] and "loud" in reply["error"]


def test_settings_are_read_once_at_start_up(ingest, make_event, forwarder, monkeypatch):
    mod = ingest(env={"max_body_bytes": "100000"})
    monkeypatch.setenv("max_body_bytes", "10")  # a later change of the environment has no effect
    monkeypatch.setenv("forward_function", "elsewhere")
    status, reply = post(mod, make_event, eventlist(anon(3)))
    assert status == 200 and reply["forwarded"] == 1
    assert forwarder.requests[0]["path"].endswith("/alert-forwarder")


def _third_party_imports(path: Path, seen: set, found: set) -> None:
    """Top-level imports of ``path`` and of every module of the build context it imports relatively."""
    if path in seen:
        return
    seen.add(path)
    tree = ast.parse(path.read_text())
    optional = set()  # ``try: import orjson / except ImportError``: used when installed, not required
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError") for h in node.handlers
        ):
            optional.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            mod = node.module.split(".") if node.module else []
            if mod and mod[0] == "edgeguard" and path.parent == FUNCTION:
                base, mod = ROOT, mod  # the build context's copy of edgeguard/
            for name in [None] + [a.name for a in node.names]:
                target = base.joinpath(*mod, *([name] if name else []))
                for cand in (target.with_suffix(".py"), target / "__init__.py"):
                    if cand.is_file():
                        _third_party_imports(cand, seen, found)


def test_requirements_are_exactly_the_third_party_modules_the_function_imports():
    found: set = set()
    _third_party_imports(FUNCTION / "handler.py", set(), found)
    third_party = {m for m in found if m not in sys.stdlib_module_names and m != "__future__"}
    # The kubernetes client is imported lazily by edgeguard.kube, which audit-ingest never calls.
    third_party.discard("kubernetes")
    required = set()
    for line in (FUNCTION / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            required.add(line.split(">")[0].split("=")[0].split("<")[0].strip().lower())
    assert {DISTRIBUTIONS.get(m, m).lower() for m in third_party} == required


def test_waits_and_the_hand_off_timeout_must_fit_in_the_answer_time(ingest, make_event, forwarder):
    # The function must answer before the watchdog's exec_timeout cuts it off (a 504 the API server retries,
    # while the hand-off may still go on): a configuration that cannot is refused at start-up.
    mod = ingest(env={"answer_within_seconds": "12", "batch_wait_seconds": "5", "forward_timeout": "10"})
    status, reply = post(mod, make_event, anon(4))
    assert status == 503 and "answer_within_seconds=12 is too short" in reply["error"]
    assert forwarder.requests == []
    assert (
        post(
            ingest(env={"answer_within_seconds": "20", "batch_wait_seconds": "5", "forward_timeout": "10"}),
            make_event,
            anon(5),
        )[0]
        == 200
    )


def test_stack_yml_answers_before_exec_timeout_and_exec_timeout_before_the_api_servers_timeout():
    from edgeguard.config import parse_duration
    from local import stackfile

    env = stackfile.load().functions["audit-ingest"].environment
    exec_timeout = parse_duration(env["exec_timeout"])
    waits = 2 * float(env["batch_wait_seconds"]) + float(env["forward_timeout"])
    # 30 s: client-go's timeout for the audit webhook (apiserver/pkg/util/webhook, defaultRequestTimeout)
    assert waits <= float(env["answer_within_seconds"]) < exec_timeout < 30
    assert parse_duration(env["read_timeout"]) > exec_timeout and parse_duration(env["write_timeout"]) > exec_timeout
