"""stack.yml is valid for faas-cli 0.18 and asks OpenFaaS CE only for what CE honours."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from local import stackfile

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests/data/openfaas/openfaas-stack-schema.json").read_text())
STACK = stackfile.load()
RAW = STACK.raw_text
FUNCTIONS = ["audit-ingest", "alert-forwarder", "configmap-secret-scrubber", "node-enroll"]
ALLOWED_DEPS = {"requests", "pyyaml", "kubernetes"}
# Labels/annotations OpenFaaS CE (faas-netes 0.18.17) acts on; anything else is either ignored or rejected.
CE_HONOURED = {
    "com.openfaas.scale.min",
    "com.openfaas.scale.max",
    "com.openfaas.scale.factor",
    "topic",
    "schedule",
    "prometheus.io.scrape",
}


def test_stack_validates_against_the_derived_schema():
    jsonschema.Draft202012Validator(SCHEMA).validate(STACK.doc)


def test_version_is_the_text_faas_cli_accepts():
    assert re.search(r"(?m)^version:\s*\"?1\.0\"?\s*$", RAW), "faas-cli rejects anything but version: 1.0"


def test_provider_and_gateway_default():
    assert STACK.doc["provider"] == {"name": "openfaas", "gateway": "http://127.0.0.1:8080"}
    assert "gateway: ${OPENFAAS_URL:-http://127.0.0.1:8080}" in RAW


def test_template_is_pinned_python3_http_from_the_flask_template_repo():
    (tpl,) = STACK.doc["configuration"]["templates"]
    assert tpl["name"] == "python3-http"
    assert re.fullmatch(r"https://github.com/openfaas/python-flask-template#[0-9a-f]{40}", tpl["source"])


def test_shared_package_is_copied_into_every_build_context():
    assert STACK.copy == ["./edgeguard"]


def test_envsubst_rejects_the_forms_faas_cli_rejects():
    with pytest.raises(stackfile.StackError):
        stackfile.envsubst("${A-b}", {})
    assert stackfile.envsubst("${A:-x} $A $$ ${B:=y}", {"A": ""}) == "x $A $ y"
    assert "${" not in stackfile.envsubst(RAW, {}), "every ${...} in stack.yml needs a default"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_shape(name):
    fn = STACK.functions[name]
    assert fn.lang == "python3-http"
    assert fn.handler == ROOT / "functions" / name
    assert f"${{REGISTRY:-ghcr.io/edgeguard}}/{name}:${{TAG:-" in RAW
    assert (fn.handler / "handler.py").is_file() and (fn.handler / "requirements.txt").is_file()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_timeouts_are_explicit_and_fit_under_the_gateway(name):
    env = STACK.functions[name].environment
    secs = {k: int(env[k].rstrip("s")) for k in ("exec_timeout", "read_timeout", "write_timeout")}
    assert secs["exec_timeout"] <= 60, "the CE gateway's upstream timeout is 60s"
    assert secs["read_timeout"] > secs["exec_timeout"] and secs["write_timeout"] > secs["exec_timeout"]


def _mi(q: str) -> int:
    m = re.fullmatch(r"(\d+)(Mi|Gi)", q)
    assert m, f"memory quantity {q!r} should be in Mi/Gi"
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def test_memory_fits_a_2gb_raspberry_pi():
    total_limits = 0
    for name in FUNCTIONS:
        raw = STACK.functions[name].raw
        lim, req = _mi(raw["limits"]["memory"]), _mi(raw["requests"]["memory"])
        assert req <= lim <= 256
        total_limits += lim
    # k3s server + OpenFaaS + Falco need the rest of 2 GiB.
    assert total_limits <= 768


@pytest.mark.parametrize("name", FUNCTIONS)
def test_only_labels_and_annotations_ce_honours(name):
    raw = STACK.functions[name].raw
    assert "namespace" not in raw or raw["namespace"] == "openfaas-fn"
    assert "constraints" not in raw, "CE ignores constraints"
    for key, value in {**(raw.get("labels") or {}), **(raw.get("annotations") or {})}.items():
        assert key in CE_HONOURED, f"{key} is ignored or rejected by OpenFaaS CE"
        assert "amazonaws.com" not in str(value) and "gke.io" not in str(value)
    labels = raw.get("labels") or {}
    for key in ("com.openfaas.scale.min", "com.openfaas.scale.max"):
        if key in labels:
            assert 1 <= int(labels[key]) <= 5, "CE rejects more than 5 replicas"
    if "topic" in (raw.get("annotations") or {}):
        assert "," not in raw["annotations"]["topic"], "CE takes a single topic"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_secrets_are_dns_names_and_kube_credentials_only_where_the_api_is_used(name):
    fn = STACK.functions[name]
    for s in fn.secrets:
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", s)
    reqs = {
        re.split(r"[<>=!~\[ ]", line.strip(), maxsplit=1)[0].lower()
        for line in (fn.handler / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert reqs <= ALLOWED_DEPS, f"unexpected runtime dependencies {reqs - ALLOWED_DEPS}"
    kubeconfigs = [s for s in fn.secrets if s.endswith("-kubeconfig")]
    # The kubernetes package only where the API is called; a function may call it without the package
    # (alert-forwarder's kubesecret.py), and then its code reads the credential it lists.
    if "kubernetes" in reqs:
        assert kubeconfigs
    code = "\n".join(p.read_text() for p in fn.handler.glob("*.py"))
    for s in kubeconfigs:
        assert f'"{s}"' in code, f"{name} lists {s} but never reads it"


def test_environment_values_keep_faas_clis_text(tmp_path):
    (tmp_path / "fn").mkdir()
    (tmp_path / "stack.yml").write_text(
        "version: 1.0\nprovider: {name: openfaas}\nfunctions:\n  f:\n    lang: python3-http\n    handler: ./fn\n"
        "    image: x\n    environment: {empty: ${UNSET_VAR_FOR_TEST:-}, flag: true, n: 3}\n"
    )
    env = stackfile.load(tmp_path / "stack.yml", env={}).functions["f"].environment
    assert env == {"empty": "", "flag": "true", "n": "3"}
