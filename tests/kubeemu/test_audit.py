"""audit.k8s.io/v1 events for served requests (policy levels, stages, webhook batches)."""

from __future__ import annotations

import json
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import kubernetes
import pytest

from tests.kubeemu.helpers import api_error

MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_create_is_audited_with_object_ref_bodies_user_and_status(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit()
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "creds"}, "data": {"k": "v"}})
    (ev,) = [e for e in emu.audit_events if e["verb"] == "create"]
    assert (ev["kind"], ev["apiVersion"], ev["level"], ev["stage"]) == (
        "Event",
        "audit.k8s.io/v1",
        "RequestResponse",
        "ResponseComplete",
    )
    # As a real apiserver's (see a kubectl-run webhook capture): no uid/resourceVersion on create.
    assert ev["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": "creds", "apiVersion": "v1"}
    assert ev["requestURI"] == "/api/v1/namespaces/default/configmaps"
    assert ev["user"]["username"] == "system:admin" and "system:masters" in ev["user"]["groups"]
    assert ev["sourceIPs"] == ["127.0.0.1"] and ev["userAgent"]
    assert ev["responseStatus"] == {"metadata": {}, "code": 201}
    assert ev["requestObject"]["data"] == {"k": "v"} and ev["responseObject"]["metadata"]["uid"] == cm.metadata.uid
    assert MICRO.match(ev["requestReceivedTimestamp"]) and MICRO.match(ev["stageTimestamp"])
    assert ev["annotations"]["authorization.k8s.io/decision"] == "allow"


def test_update_object_ref_carries_the_request_resource_version(kube_clients):
    emu, core, _ = kube_clients
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    emu.enable_audit()
    core.replace_namespaced_config_map("c", "default", cm)
    (ev,) = emu.audit_events
    assert (ev["verb"], ev["objectRef"]["resourceVersion"], ev["objectRef"]["uid"]) == (
        "update",
        cm.metadata.resource_version,
        cm.metadata.uid,
    )


def test_secret_bodies_stay_out_of_default_audit_events(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit()
    core.create_namespaced_secret("default", {"metadata": {"name": "s"}, "stringData": {"password": "hunter2-xyz"}})
    core.read_namespaced_secret("s", "default")
    events = [e for e in emu.audit_events if e.get("objectRef", {}).get("resource") == "secrets"]
    assert [e["verb"] for e in events] == ["create", "get"]
    assert all(e["level"] == "Metadata" and "requestObject" not in e and "responseObject" not in e for e in events)
    assert "hunter2" not in json.dumps(emu.audit_events) and "aHVudGVyMi" not in json.dumps(emu.audit_events)


def test_denied_and_failed_requests_are_audited_with_decision_and_status(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit()
    emu.deny("delete", "configmaps")
    api_error(core.delete_namespaced_config_map, "x", "default")
    api_error(core.read_namespaced_config_map, "missing", "default")
    denied, missing = emu.audit_events[-2:]
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"
    assert denied["responseStatus"]["code"] == 403 and denied["responseStatus"]["reason"] == "Forbidden"
    assert missing["responseStatus"]["code"] == 404 and "responseObject" not in missing


def test_policy_rules_pick_levels_first_match_wins(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit(
        {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {
                    "level": "None",
                    "resources": [{"group": "", "resources": ["configmaps"], "resourceNames": ["controller-leader"]}],
                },
                {
                    "level": "Request",
                    "resources": [{"group": "", "resources": ["configmaps"]}],
                    "namespaces": ["kube-system"],
                },
                {"level": "None", "verbs": ["list"]},
                {"level": "Metadata"},
            ],
        }
    )
    core.create_namespaced_config_map("kube-system", {"metadata": {"name": "a"}, "data": {"k": "v"}})
    core.create_namespaced_config_map("default", {"metadata": {"name": "controller-leader"}})
    core.patch_namespaced_config_map("controller-leader", "default", {"data": {"x": "y"}})
    core.list_namespaced_config_map("default")
    core.read_namespaced_config_map("controller-leader", "default")
    events = emu.audit_events
    assert [(e["verb"], e["objectRef"].get("name"), e["level"]) for e in events] == [
        ("create", "a", "Request"),
        ("create", "controller-leader", "Metadata"),
    ]
    assert events[0]["requestObject"]["data"] == {"k": "v"} and "responseObject" not in events[0]


def test_watch_is_audited_at_response_started_and_complete(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit()
    list(kubernetes.watch.Watch().stream(core.list_namespaced_pod, namespace="default", timeout_seconds=1))
    stages = [e["stage"] for e in emu.audit_events if e["verb"] == "watch"]
    assert stages == ["ResponseStarted", "ResponseComplete"]


class _Receiver(BaseHTTPRequestHandler):
    posts: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append((self.headers.get("Authorization"), self.headers.get("Content-Type"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.posts = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/k8s-audit", _Receiver.posts
    server.shutdown()


@pytest.fixture
def https_receiver(tmp_path):
    """The receiver behind TLS, with a certificate from a local CA for the name `audit.local`."""
    from local import localca

    if not localca.available():
        pytest.skip("openssl is not on PATH")
    cert = localca.LocalCA(tmp_path / "ca").issue("audit", dns=("audit.local",), ips=())
    _Receiver.posts = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_port}/k8s-audit", _Receiver.posts, cert.ca_pem
    server.shutdown()


def test_webhook_gets_event_lists_in_batches_with_the_bearer_token_over_verified_https(kube_clients, https_receiver):
    url, posts, ca = https_receiver
    emu, core, _ = kube_clients
    # A full batch is sent at once; the long wait proves batching does not depend on timing.
    emu.enable_audit(
        webhook=url,
        token="audit-ingest-token-value",
        batch_max_size=3,
        batch_max_wait=30,
        ca_pem=ca,
        server_name="audit.local",
    )
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    assert emu.flush_audit(5)
    assert posts and all(p[0] == "Bearer audit-ingest-token-value" and p[1] == "application/json" for p in posts)
    assert all(p[2]["kind"] == "EventList" and p[2]["apiVersion"] == "audit.k8s.io/v1" for p in posts)
    names = [i["objectRef"]["name"] for p in posts for i in p[2]["items"] if i["verb"] == "create"]
    assert names == ["c0", "c1", "c2"]
    assert len(posts) == 1  # one EventList of 3, not one POST per event
    assert all("kind" not in i and "apiVersion" not in i for p in posts for i in p[2]["items"])  # bare items
    assert emu.audit_errors == []


def test_an_http_webhook_gets_its_events_without_the_token_as_client_go_sends_them(kube_clients, receiver):
    """client-go (the API server's webhook client) sends a kubeconfig's credentials only over https."""
    url, posts = receiver
    emu, core, _ = kube_clients
    emu.enable_audit(webhook=url, token="audit-ingest-token-value", batch_max_size=1, batch_max_wait=0.05)
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert emu.flush_audit(5)
    assert posts and all(p[0] is None for p in posts)
    assert emu.audit_errors == [
        "the webhook URL is http: its token is not sent (client-go sends credentials only over https)"
    ]


def test_a_webhook_certificate_for_another_name_is_refused(kube_clients, https_receiver):
    url, posts, ca = https_receiver
    emu, core, _ = kube_clients
    emu.enable_audit(
        webhook=url, token="t" * 20, batch_max_size=1, batch_max_wait=0.05, ca_pem=ca, server_name="other.local"
    )
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert emu.flush_audit(10)
    assert posts == [] and emu.audit_errors and "TLS failed" in emu.audit_errors[-1]


def test_unreachable_webhook_drops_the_batch_and_reports_it(kube_clients):
    emu, core, _ = kube_clients
    emu.enable_audit(webhook="http://127.0.0.1:9/nothing-listens", batch_max_wait=0.05)
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert emu.flush_audit(10)
    assert emu.audit_errors and "dropped 1 events" in emu.audit_errors[-1]
    assert len(emu.audit_events) == 1  # still kept in memory


def test_source_ips_list_forwarded_addresses_before_the_peer(kube_emulator):
    import requests

    kube_emulator.enable_audit()
    requests.get(
        f"{kube_emulator.url}/api/v1/namespaces/default/configmaps",
        timeout=5,
        headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.2", "Authorization": "Bearer x"},
    )
    (ev,) = kube_emulator.audit_events
    assert ev["sourceIPs"] == ["203.0.113.7", "10.0.0.2", "127.0.0.1"]
    assert ev["objectRef"] == {"resource": "configmaps", "namespace": "default", "apiVersion": "v1"}  # a list
