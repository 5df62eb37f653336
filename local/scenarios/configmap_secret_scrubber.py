"""Seed flow: `kubectl create configmap aws-creds --from-literal aws_access_key_id=AKES20LNOA`.

The ConfigMap and a Deployment reading it are created in the demo cluster; the audit event that
kubectl's request produces goes to audit-ingest, which raises "Create/Modify Configmap With Private
Credentials" and hands it to alert-forwarder, which routes it to configmap-secret-scrubber (scrub_mode=move
in the local gateway). We then watch the cluster until the key has moved. Only key names are shown.
"""

from __future__ import annotations

import time
import uuid

NS = "default"
CM = "aws-creds"
KEY = "aws_access_key_id"
VALUE = "AKES20LNOA"  # the seed's literal: it goes to the cluster and the audit event, never to the screen
DEPLOYMENT = "aws-cli"
CHAIN = ("audit-ingest", "alert-forwarder", "configmap-secret-scrubber")


def audit_event(uid: str, rv: str) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    obj = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": CM, "namespace": NS, "creationTimestamp": None},
        "data": {KEY: VALUE},
    }
    resp = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": CM, "namespace": NS, "uid": uid, "resourceVersion": rv, "creationTimestamp": now + "Z"},
        "data": {KEY: VALUE},
    }
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{NS}/configmaps?fieldManager=kubectl-create&fieldValidation=Strict",
        "verb": "create",
        "user": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
        "sourceIPs": ["192.168.1.20"],
        "userAgent": "kubectl/v1.31.4 (linux/arm64) kubernetes/a78aa47",
        "objectRef": {"resource": "configmaps", "namespace": NS, "name": CM, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": obj,
        "responseObject": resp,
        "requestReceivedTimestamp": now + ".100000Z",
        "stageTimestamp": now + ".104000Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    }
    return {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [event]}


def _deployment() -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {
                    "containers": [
                        {
                            # small image: on a real edge cluster the rollout must finish
                            # within the scrubber's rollout_timeout_seconds
                            "name": "aws",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", 'test -n "$AWS_ACCESS_KEY_ID" && sleep 3600'],
                            "env": [
                                {
                                    "name": "AWS_ACCESS_KEY_ID",
                                    "valueFrom": {"configMapKeyRef": {"name": CM, "key": KEY}},
                                }
                            ],
                        }
                    ]
                },
            },
        },
    }


def _env_sources(dep) -> list[str]:
    out = []
    for c in dep.spec.template.spec.containers:
        for e in c.env or []:
            vf = e.value_from
            if vf and vf.secret_key_ref:
                out.append(f"{c.name}: {e.name} <- Secret {vf.secret_key_ref.name} key {vf.secret_key_ref.key}")
            elif vf and vf.config_map_key_ref:
                out.append(
                    f"{c.name}: {e.name} <- ConfigMap {vf.config_map_key_ref.name} key {vf.config_map_key_ref.key}"
                )
    return out


def _not_built(ctx) -> list[str]:
    """Functions of the chain that answer 501 'not built yet'."""
    from . import NotBuilt

    missing = []
    for fn in CHAIN:
        try:
            ctx.call(fn, method="GET", token_secret=f"{fn}-token", timeout=10)
        except NotBuilt:
            missing.append(fn)
        except Exception:  # noqa: BLE001 - unreachable is reported by the caller's timeout message
            pass
    return missing


def run(ctx) -> None:
    if ctx.kube is None:
        ctx.fail(f"no Kubernetes API for the demo ({ctx.kube_description})")
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    v1, apps = client.CoreV1Api(ctx.kube), client.AppsV1Api(ctx.kube)
    ctx.say(f"kubectl create configmap {CM} --from-literal {KEY}=<value>   (namespace {NS})")
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM, "namespace": NS}, "data": {KEY: VALUE}}
    try:
        cm = v1.create_namespaced_config_map(NS, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        cm = v1.replace_namespaced_config_map(CM, NS, body)  # a re-run of the demo starts from the seed
    try:
        apps.create_namespaced_deployment(NS, _deployment())
    except ApiException as exc:
        if exc.status != 409:
            raise
        apps.replace_namespaced_deployment(DEPLOYMENT, NS, _deployment())
    ctx.show("ConfigMap before (key names only)", {"name": CM, "keys": sorted(cm.data or {})})
    ctx.show(f"Deployment {DEPLOYMENT} before", _env_sources(apps.read_namespaced_deployment(DEPLOYMENT, NS)))

    from . import NotBuilt

    try:
        r = ctx.call(
            "audit-ingest",
            body=audit_event(cm.metadata.uid, cm.metadata.resource_version),
            token_secret="audit-ingest-token",
        )
    except NotBuilt:
        # the demo reports this as "not built yet" (an honest outcome, not a success)
        ctx.not_built("audit-ingest answered 501 (not built yet), so nothing raised the alert")
    if r.status_code >= 300:
        ctx.fail(f"audit-ingest answered {r.status_code}: {r.text[:300]}")
        return
    ctx.say(f"audit event posted to audit-ingest: HTTP {r.status_code}")

    deadline = time.monotonic() + 45
    moved = False
    while time.monotonic() < deadline:
        ctx.drain_async(timeout=5)
        cm = v1.read_namespaced_config_map(CM, NS)
        if KEY not in (cm.data or {}):
            moved = True
            break
        time.sleep(0.5)
    if not moved:
        missing = _not_built(ctx)
        if missing:
            ctx.not_built(f"the key is still in the ConfigMap: {', '.join(missing)} answered 501 (not built yet)")
        else:
            ctx.fail("the key is still in the ConfigMap after 45 s; see the function logs")
        return

    ann = cm.metadata.annotations or {}
    secret_name = ann.get("scrubber.edgeguard.io/target-secret", f"{CM}-credentials")
    sec = v1.read_namespaced_secret(secret_name, NS)
    ctx.show(
        "ConfigMap after (key names only)",
        {"name": CM, "keys": sorted(cm.data or {}), "moved-keys": ann.get("scrubber.edgeguard.io/moved-keys")},
    )
    ctx.show(
        f"Secret {secret_name} (key names only)",
        {
            "type": sec.type,
            "keys": sorted(sec.data or {}),
            "rotate": (sec.metadata.annotations or {}).get("scrubber.edgeguard.io/rotate"),
        },
    )
    dep = apps.read_namespaced_deployment(DEPLOYMENT, NS)
    sources = _env_sources(dep)
    ctx.show(f"Deployment {DEPLOYMENT} after", sources)
    events = [
        e
        for e in v1.list_namespaced_event(NS).items
        if e.involved_object and e.involved_object.name == CM and e.reason == "CredentialsMoved"
    ]
    if events:
        ctx.say(f"Event {events[0].reason}: {events[0].message}")
    if KEY not in (sec.data or {}):
        ctx.fail(f"the key left the ConfigMap but Secret {secret_name} does not hold it")
    elif not any("Secret" in s and KEY in s for s in sources):
        ctx.fail(f"Deployment {DEPLOYMENT} does not read {KEY} from the Secret")
    else:
        status = dep.status
        ctx.ok(
            f"{KEY} moved to Secret {secret_name}; Deployment {DEPLOYMENT} reads it from there "
            f"(rollout: {status.updated_replicas or 0}/{dep.spec.replicas} updated); rotate the credential"
        )
