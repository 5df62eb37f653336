"""The edge audit policy: Falco's upstream policy with `level: None` rules first, and nothing a rule reads lost.

Three layers of proof:
1. the policy is the upstream file, byte for byte, with edgeguard's rules inserted after `rules:`;
2. every one of Falco's k8s-audit regression events gets exactly the level the upstream policy gives it;
   every request a None rule drops, synthesised from the rule itself, raises no alert from the bundled
   upstream rules or rules.d (one named exception), while the same request by a named user is kept;
3. on the real API server (../shared/tools/kube/cluster), requests of each kind are dropped or delivered
   as the model says.
"""

from __future__ import annotations

import itertools
import json
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from edgeguard.falco import loader
from edgeguard.falco.engine import DEFAULT_RULES, Engine
from edgeguard.falco.source import Batch, split_payload
from edgeguard_bootstrap import audit_policy

from . import auditmatch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
EVENTS = DATA / "falco" / "regression" / "events"
LOCAL_RULES = sorted((REPO / "functions" / "audit-ingest" / "rules.d").glob("*.yaml"))
UPSTREAM = yaml.safe_load(audit_policy.UPSTREAM.read_text())
EDGE = yaml.safe_load(audit_policy.edge_policy())
NONE_RULES = EDGE["rules"][: len(EDGE["rules"]) - len(UPSTREAM["rules"])]
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


def test_edge_policy_is_the_upstream_file_with_edgeguard_rules_inserted_after_rules():
    text, upstream = audit_policy.edge_policy(), audit_policy.UPSTREAM.read_bytes()
    head, _, tail = upstream.partition(b"rules:\n")
    assert text == head + b"rules:\n" + audit_policy.EDGE_RULES.read_bytes() + tail
    assert (DATA / "k3s" / "audit-policy.yaml").read_bytes() == upstream  # still falcosecurity/plugins' copy
    assert EDGE["rules"][len(NONE_RULES) :] == UPSTREAM["rules"]
    assert {k: v for k, v in EDGE.items() if k != "rules"} == {k: v for k, v in UPSTREAM.items() if k != "rules"}
    assert NONE_RULES and all(r["level"] == "None" for r in NONE_RULES)


def test_every_none_rule_names_who_it_applies_to():
    # A None rule without users or userGroups would drop the request for everyone, attackers included.
    for rule in NONE_RULES:
        assert rule.get("users") or rule.get("userGroups"), rule


def test_the_model_follows_the_api_servers_matching():
    rules = {
        "rules": [
            {"level": "None", "resources": [{"group": "", "resources": ["*/status"]}]},
            {"level": "Request", "resources": [{"group": "", "resources": ["pods"], "resourceNames": ["p1"]}]},
            {"level": "None", "nonResourceURLs": ["/healthz*"]},
            {"level": "Metadata"},
        ]
    }
    req = dict(user="u", groups=[], verb="get", group="", namespace="ns", name="p1", path="")
    assert auditmatch.level(rules, dict(req, resource="pods", subresource="status")) == "None"
    assert auditmatch.level(rules, dict(req, resource="pods", subresource="")) == "Request"
    assert auditmatch.level(rules, dict(req, resource="pods", subresource="", name="p2")) == "Metadata"
    assert auditmatch.level(rules, dict(req, resource="", path="/healthz/etcd")) == "None"
    assert auditmatch.level(rules, dict(req, resource="", path="/readyz")) == "Metadata"
    # Resource rules never match non-resource requests, and the default is None.
    assert auditmatch.level({"rules": [rules["rules"][1]]}, dict(req, resource="", path="/x")) == "None"


def regression_events():
    for path in sorted(EVENTS.glob("*.json")):
        text = path.read_text()
        try:
            docs = [json.loads(text)]
        except json.JSONDecodeError:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        for doc in docs:
            for event in doc.get("items", [doc]) if isinstance(doc, dict) else doc:
                yield path.name, event


def test_every_falco_regression_event_keeps_its_upstream_level():
    seen = 0
    for name, event in regression_events():
        req = auditmatch.request_of(event)
        upstream, edge = auditmatch.level(UPSTREAM, req), auditmatch.level(EDGE, req)
        assert edge == upstream, (name, req)
        seen += 1
    assert seen >= 40


def _event(req: dict, n: int) -> dict:
    """An audit event as the API server would send it for req at Metadata level."""
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"synthetic-{n}",
        "stage": "ResponseComplete",
        "verb": req["verb"],
        "user": {"username": req["user"], "groups": req["groups"]},
        "sourceIPs": ["10.0.0.5"],
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-26T10:11:12.000000Z",
        "stageTimestamp": "2026-11-26T10:11:12.100000Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC"},
    }
    if req["resource"]:
        ns = f"namespaces/{req['namespace']}/" if req["namespace"] else ""
        base = "/api/v1" if not req["group"] else f"/apis/{req['group']}/v1"
        name = f"/{req['name']}" if req["name"] else ""
        sub = f"/{req['subresource']}" if req["subresource"] else ""
        event["requestURI"] = f"{base}/{ns}{req['resource']}{name}{sub}"
        event["objectRef"] = {
            "resource": req["resource"],
            "namespace": req["namespace"],
            "name": req["name"],
            "apiGroup": req["group"],
            "apiVersion": "v1",
            "subresource": req["subresource"],
        }
    else:
        event["requestURI"] = req["path"]
    return event


GROUP_MEMBER = {
    "system:nodes": "system:node:pi-01",
    "system:serviceaccounts:kube-system": "system:serviceaccount:kube-system:some-controller",
    "system:unauthenticated": "system:anonymous",
}


def dropped_requests(rule: dict):
    """Requests of every shape the rule names: each user or group member, verb, resource, namespace, path."""
    who = [(u, ["system:authenticated"]) for u in rule.get("users", [])]
    for g in rule.get("userGroups", []):
        member = GROUP_MEMBER[g]
        groups = [g] if g == "system:unauthenticated" else [g, "system:authenticated"]
        if g == "system:serviceaccounts:kube-system":
            groups.append("system:serviceaccounts")
        who.append((member, groups))
    verbs = rule.get("verbs") or VERBS
    if rule.get("nonResourceURLs"):
        paths = [p.rstrip("*") + ("/etcd" if p.endswith("*") else "") for p in rule["nonResourceURLs"]]
        paths += [p.rstrip("*") for p in rule["nonResourceURLs"] if p.endswith("*")]
        for (user, groups), path in itertools.product(who, paths):
            yield dict(
                user=user,
                groups=groups,
                verb="get",
                resource="",
                group="",
                subresource="",
                namespace="",
                name="",
                path=path,
            )
        return
    namespaces = rule.get("namespaces") or ["default", "kube-system"]
    for (user, groups), verb, gr, ns in itertools.product(who, verbs, rule["resources"], namespaces):
        for res in gr["resources"]:
            resource, _, sub = res.partition("/")
            yield dict(
                user=user,
                groups=groups,
                verb=verb,
                resource=resource,
                group=gr.get("group", ""),
                subresource=sub,
                namespace=ns,
                name="" if verb in ("list", "watch") else "x",
                path="",
            )


@pytest.fixture(scope="module")
def engine():
    # Every rule as shipped, plus "Full K8s Administrative Access" switched on (it is off upstream):
    # whatever a user could enable must still see the requests it reads.
    extra = REPO / "tests" / "bootstrap" / "data" / "enable-full-admin-rule.yaml"
    return Engine(loader.load([DEFAULT_RULES, *LOCAL_RULES, extra]), rule_matching="all")


# k3s's cloud controller manager authenticates without the system: prefix, so "Disallowed K8s User"
# fires on each of its lease renewals (30 a minute): the one alert the edge policy gives up, on purpose.
ACCEPTED = {("k3s-cloud-controller-manager", "Disallowed K8s User")}


def test_nothing_a_none_rule_drops_raises_an_alert_and_the_same_request_by_a_named_user_is_kept(engine):
    n, counted = 0, 0
    for rule in NONE_RULES:
        for req in dropped_requests(rule):
            n += 1
            assert auditmatch.level(EDGE, req) == "None", req
            batch = Batch()
            split_payload({"kind": "EventList", "items": [_event(req, n)]}, batch=batch)
            assert batch.events and not batch.errors
            rules = {a.rule for e in batch.events for a in engine.evaluate(e)}
            assert {(req["user"], r) for r in rules} <= ACCEPTED, (req, rules)
            counted += 1
            # The same request by a named user (a human, a stolen kubeconfig) is still logged as upstream logs it.
            other = dict(req, user="mallory", groups=["system:authenticated"])
            assert auditmatch.level(EDGE, other) == auditmatch.level(UPSTREAM, other) != "None", other
    assert counted > 500


def test_dropped_requests_were_logged_before():
    # Otherwise a None rule is dead weight; each one must remove something the upstream policy logs.
    for rule in NONE_RULES:
        assert any(auditmatch.level(UPSTREAM, req) != "None" for req in dropped_requests(rule)), rule


# ---- on the real API server -------------------------------------------------------------------------


def _anonymous_get(server: str, ca: Path, path: str) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with urllib.request.urlopen(server + path, context=ctx, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_real_api_server_drops_k3s_noise_and_keeps_what_the_rules_read(real_cluster):
    cluster, rx = real_cluster
    node = cluster.identity("system:node:pi-01", ("system:nodes",))
    mallory = cluster.identity("mallory", ("system:masters",))
    cluster.kubectl(
        "create", "clusterrolebinding", "edge-test-nodes", "--clusterrole=system:node", "--group=system:nodes"
    )
    lease = (
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: pi-01, namespace: kube-node-lease}\n"
        "spec: {holderIdentity: pi-01, leaseDurationSeconds: 40}\n"
    )
    t0 = time.time()
    cluster.kubectl("apply", "-f", "-", input=lease, kubeconfig=node)  # dropped: a node heartbeat
    cluster.kubectl("annotate", "lease", "pi-01", "-n", "kube-node-lease", "edge=1", kubeconfig=mallory)  # kept
    cluster.kubectl("create", "secret", "generic", "edge-probe", "--from-literal=k=v")  # kept (admin)
    cluster.kubectl("get", "secret", "edge-probe", "-o", "name", kubeconfig=node, check=False)  # kept: secret get
    server = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)["clusters"][0]["cluster"][
        "server"
    ]
    ca = cluster.dir / "ca.crt"
    assert _anonymous_get(server, ca, "/healthz") == 200  # dropped
    assert _anonymous_get(server, ca, "/version") == 200  # kept
    assert _anonymous_get(server, ca, "/healthz/etcd") in (401, 403)  # kept
    time.sleep(12)  # one round of the API server's own reconcilers (every 10 s), and the 1 s webhook batching
    got = [e for e in rx.snapshot() if e["received"] >= t0]

    def seen(**want):
        return [e for e in got if all(e[k] == v for k, v in want.items())]

    assert not seen(user="system:node:pi-01", resource="leases")
    assert seen(user="mallory", resource="leases", name="pi-01", verb="patch")
    assert seen(user="admin", resource="secrets", name="edge-probe", verb="create")
    assert seen(user="system:node:pi-01", resource="secrets", name="edge-probe", verb="get")
    assert not seen(user="system:anonymous", uri="/healthz")
    assert seen(user="system:anonymous", uri="/version")
    assert seen(user="system:anonymous", uri="/healthz/etcd")
    reconcilers = [
        e for e in got if e["user"] == "system:apiserver" and e["resource"] in ("namespaces", "services", "endpoints")
    ]
    assert not reconcilers, reconcilers[:3]
    # And the model agrees with the server on every event it delivered.
    for e in got:
        req = {
            "user": e["user"],
            "groups": e["groups"],
            "verb": e["verb"],
            "resource": e["resource"],
            "group": e["group"],
            "subresource": e["subresource"],
            "namespace": e["namespace"],
            "name": e["name"],
            "path": e["uri"].split("?", 1)[0],
        }
        assert auditmatch.level(EDGE, req) != "None", e


def test_k3s_cloud_controller_manager_events_are_dropped_and_its_node_writes_kept():
    # k3s's cloud controller manager records events (servicelb, node controller) as
    # "k3s-cloud-controller-manager", without the system: prefix the other k3s identities have.
    ccm = dict(user="k3s-cloud-controller-manager", groups=["system:authenticated"], subresource="", path="")
    for group in ("", "events.k8s.io"):
        for verb in ("create", "patch", "update"):
            req = dict(ccm, verb=verb, resource="events", group=group, namespace="kube-system", name="x")
            assert auditmatch.level(UPSTREAM, req) != "None"
            assert auditmatch.level(EDGE, req) == "None", req
    # What it does to nodes and services is still logged, as upstream logs it.
    for resource, sub in (("nodes", ""), ("nodes", "status"), ("services", "status")):
        req = dict(ccm, verb="patch", resource=resource, subresource=sub, group="", namespace="", name="pi-01")
        assert auditmatch.level(EDGE, req) == auditmatch.level(UPSTREAM, req) != "None", req
