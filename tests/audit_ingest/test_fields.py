"""Every ka.*/jevt.*/json.* field family, with the k8saudit plugin's absent/list semantics and quirks."""

from __future__ import annotations

import json

import pytest

from edgeguard.falco import fields as F
from edgeguard.falco.compiler import compile_field

from .conftest import event

POD = {
    "kind": "Event",
    "auditID": "id-1",
    "stage": "ResponseComplete",
    "verb": "create",
    "requestURI": "/api/v1/namespaces/default/pods/p/exec?command=%2Fbin%2Fsh&command=ls&container=c+1&tty",
    "user": {"username": "alice", "groups": ["dev", "system:authenticated"]},
    "impersonatedUser": {"username": "bob"},
    "userAgent": "kubectl/v1.29",
    "sourceIPs": ["10.0.0.1"],
    "objectRef": {"resource": "pods", "namespace": "default", "name": "p"},
    "responseStatus": {"code": 201, "reason": "Created"},
    "annotations": {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": "",
        "cluster_name": "edge",
        "pod-security.kubernetes.io/audit-violations": "privileged",
    },
    "requestObject": {
        "spec": {
            "hostNetwork": True,
            "hostPID": False,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [1, 2]},
            "containers": [
                {
                    "name": "a",
                    "image": "localhost:5000/app:1",
                    "command": ["sh", "-c"],
                    "args": ["echo", "hi"],
                    "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}],
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}, "runAsUser": 7},
                },
                {
                    "name": "b",
                    "image": "nginx@sha256:abcd",
                    "securityContext": {"privileged": True, "readOnlyRootFilesystem": False, "procMount": "Unmasked"},
                },
            ],
            "initContainers": [{"name": "init", "image": "busybox:1.36", "securityContext": {"privileged": False}}],
            "ephemeralContainers": [{"name": "dbg", "image": "alpine"}],
            "volumes": [
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "h", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}},
                {"name": "f", "flexVolume": {"driver": "vendor/drv"}},
            ],
        }
    },
    "responseObject": {"metadata": {"name": "p"}},
    "stageTimestamp": "2024-05-01T10:11:12.123456789Z",
}


def val(name, obj=POD, arg=None):
    return compile_field(("field", name, arg)).fetch(event(obj))


@pytest.mark.parametrize(
    "name,arg,expected",
    [
        ("ka.auditid", None, "id-1"),
        ("ka.stage", None, "ResponseComplete"),
        ("ka.auth.decision", None, "allow"),
        ("ka.auth.reason", None, ""),  # present but empty is not absent
        ("ka.auth.openshift.decision", None, None),
        ("ka.security.pod.violations", None, "privileged"),
        ("ka.validations.admission.policy.failure", None, None),
        ("ka.auth.openshift.username", None, None),
        ("ka.user.name", None, "alice"),
        ("ka.user.groups", None, ("dev", "system:authenticated")),
        ("ka.impuser.name", None, "bob"),
        ("ka.verb", None, "create"),
        ("ka.useragent", None, "kubectl/v1.29"),
        ("ka.uri", None, POD["requestURI"]),
        ("ka.uri.param", "command", "/bin/sh"),  # first value, percent-decoded
        ("ka.uri.param", "container", "c 1"),  # '+' is a space
        ("ka.uri.param", "tty", ""),
        ("ka.uri.param", "missing", None),
        ("ka.target.name", None, "p"),
        ("ka.target.namespace", None, "default"),
        ("ka.target.resource", None, "pods"),
        ("ka.target.subresource", None, None),
        ("ka.target.pod.name", None, "p"),
        ("ka.resp.name", None, "p"),
        ("ka.response.code", None, "201"),
        ("ka.response.reason", None, "Created"),
        ("ka.cluster.name", None, "edge"),
        ("ka.req.pod.host_network", None, "true"),
        ("ka.req.container.host_network", None, "true"),
        ("ka.req.pod.host_pid", None, "false"),
        ("ka.req.pod.host_ipc", None, None),
        ("ka.req.pod.run_as_user", None, "1000"),
        ("ka.req.pod.run_as_group", None, "3000"),
        ("ka.req.pod.fs_group", None, "2000"),
        ("ka.req.pod.supplemental_groups", None, ("1", "2")),
        ("ka.req.pod.containers.name", None, ("a", "b")),
        ("ka.req.pod.containers.name", "1", ("b",)),
        ("ka.req.pod.containers.image", None, ("localhost:5000/app:1", "nginx@sha256:abcd")),
        # quirk: the repository is cut at the FIRST ':' (a registry port too), then at '@'
        ("ka.req.pod.containers.image.repository", None, ("localhost", "nginx")),
        ("ka.req.container.image", None, "localhost:5000/app:1"),
        ("ka.req.container.image.repository", None, "localhost"),
        ("ka.req.pod.containers.command", None, ("sh -c",)),
        ("ka.req.pod.containers.args", None, ("echo hi",)),
        # containers without the key are skipped, not "false"
        ("ka.req.pod.containers.privileged", None, ("true",)),
        ("ka.req.container.privileged", None, "true"),
        ("ka.req.pod.containers.read_only_fs", None, ("false",)),
        ("ka.req.pod.containers.allow_privilege_escalation", None, None),
        ("ka.req.pod.containers.run_as_user", None, ("7",)),
        ("ka.req.pod.containers.run_as_group", None, None),
        ("ka.req.pod.containers.proc_mount", None, ("Unmasked",)),
        # one value per container: the compact JSON of its whole 'add' array
        ("ka.req.pod.containers.add_capabilities", None, ('["NET_ADMIN","SYS_TIME"]',)),
        # quirk: reads spec.runAsUser / containers[*].runAsUser, not securityContext -> "0" in practice
        ("ka.req.pod.containers.eff_run_as_user", None, ("0", "0")),
        ("ka.req.pod.containers.eff_run_as_group", None, ("0", "0")),
        ("ka.req.pod.containers.host_port", None, ("80", "8081")),
        ("ka.req.pod.initContainers.image", None, ("busybox:1.36",)),
        ("ka.req.pod.initContainers.image.repository", None, ("busybox",)),
        ("ka.req.pod.initContainers.privileged", None, ("false",)),
        ("ka.req.pod.ephemeralContainers.name", None, ("dbg",)),
        ("ka.req.pod.volumes.hostpath", None, ("/var/run/docker.sock",)),
        ("ka.req.pod.volumes.flexvolume_driver", None, ("vendor/drv",)),
        ("ka.req.pod.volumes.volume_type", None, ("secret", "hostPath", "flexVolume")),
        ("ka.req.pod.volumes.volume_type", "1", ("hostPath",)),
        ("ka.req.volume.hostpath", "/var/run/docker.sock", "true"),
        ("ka.req.volume.hostpath", "/var/run*", "true"),
        ("ka.req.volume.hostpath", "/var", "false"),
        ("ka.req.binding.subject.has_name", "anything", "true"),
        ("ka.sourceips", None, None),  # quirk: falcosecurity/plugins#236 reads requestObject.rules[*].sourceIPs
        ("ka.req.service.type", None, None),
        ("ka.req.binding.role", None, None),
    ],
)
def test_ka_fields_on_a_pod_event(name, arg, expected):
    assert val(name, arg=arg) == expected


def test_every_field_in_the_reference_is_known():
    # 71 base + 15 initContainers + 14 ephemeralContainers ka.* fields; 3 jevt.* and 3 json.* fields
    assert len([n for n in F.FIELDS if n.startswith("ka.")]) == 100
    assert {n for n in F.FIELDS if n.startswith(("jevt.", "json."))} == {
        "jevt.value",
        "jevt.obj",
        "jevt.rawtime",
        "json.value",
        "json.obj",
        "json.rawtime",
    }


def test_no_audit_id_means_every_ka_field_is_absent_but_jevt_works():
    obj = {k: v for k, v in POD.items() if k != "auditID"}
    assert val("ka.verb", obj) is None and val("ka.req.binding.subject.has_name", obj, "x") is None
    assert val("jevt.value", obj, "/verb") == "create"


def test_container_name_and_image_error_when_any_container_lacks_them():
    obj = json.loads(json.dumps(POD))
    del obj["requestObject"]["spec"]["containers"][1]["image"]
    assert val("ka.req.pod.containers.image", obj) is None
    assert val("ka.req.pod.containers.image", obj, "0") == ("localhost:5000/app:1",)


def test_uri_param_with_semicolon_or_bad_escape_is_absent():
    for uri in ("/x?command=ls;rm", "/x?command=%zz"):
        assert val("ka.uri.param", dict(POD, requestURI=uri), "command") is None


def test_binding_and_role_fields():
    obj = {
        "auditID": "1",
        "requestObject": {
            "roleRef": {"name": "cluster-admin"},
            "subjects": [
                {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"},
                {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                {"kind": "ServiceAccount", "name": "nons"},
                {"kind": "Group", "name": "devs"},
            ],
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/exec"], "verbs": ["*"]},
                {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
            ],
        },
    }
    assert val("ka.req.binding.role", obj) == "cluster-admin"
    assert val("ka.req.binding.subjects", obj)[0] == (
        '{"kind":"User","name":"bob","apiGroup":"rbac.authorization.k8s.io"}'
    )
    assert val("ka.req.binding.subjects.user_names", obj) == ("bob",)
    assert val("ka.req.binding.subjects.serviceaccount_names", obj) == ("sa", "nons")
    assert val("ka.req.binding.subjects.serviceaccount_ns_names", obj) == ("ns:sa",)
    assert val("ka.req.binding.subjects.group_names", obj) == ("devs",)
    assert val("ka.req.role.rules.verbs", obj) == ("*", "get")
    assert val("ka.req.role.rules.verbs", obj, "1") == ("get",)
    assert val("ka.req.role.rules.resources", obj) == ("pods", "pods/exec")
    assert val("ka.req.role.rules.apiGroups", obj) == ("",)
    assert val("ka.req.role.rules.nonResourceURLs", obj) == ("/healthz",)
    assert len(val("ka.req.role.rules", obj)) == 2
    assert val("ka.req.binding.subjects.user_names", {"auditID": "1", "requestObject": {"subjects": []}}) is None


def test_service_ports_is_one_value_holding_the_whole_array():
    obj = {
        "auditID": "1",
        "requestObject": {
            "spec": {"type": "NodePort", "ports": [{"protocol": "TCP", "port": 80, "nodePort": 30080}, {"port": 81}]}
        },
    }
    assert val("ka.req.service.type", obj) == "NodePort"
    assert val("ka.req.service.ports", obj) == ('[{"protocol":"TCP","port":80,"nodePort":30080},{"port":81}]',)
    assert val("ka.req.service.ports", obj, "1") == val("ka.req.service.ports", obj)


def test_configmap_fields_and_non_string_values_as_compact_json():
    obj = {
        "auditID": "1",
        "objectRef": {"name": "cm"},
        "requestObject": {"data": {"a": "x\ny", "n": 1}},
        "responseStatus": {"code": None},
    }
    assert val("ka.req.configmap.name", obj) == "cm"
    assert val("ka.req.configmap.obj", obj) == '{"a":"x\\ny","n":1}'
    assert val("ka.response.code", obj) == "null"  # explicit null is the string "null", which exists


def test_target_pod_name_only_for_pods_without_subresource():
    assert val("ka.target.pod.name", dict(POD, objectRef={"resource": "pods", "subresource": "exec"})) is None
    assert val("ka.target.pod.name", dict(POD, objectRef={"resource": "pods", "subresource": ""})) == "p"
    assert val("ka.target.pod.name", dict(POD, objectRef={"resource": "services"})) is None


@pytest.mark.parametrize("prefix", ["jevt", "json"])
def test_json_plugin_fields(prefix):
    obj = {"a/b": {"m~n": [10, {"x": "y"}]}, "stage": "ResponseComplete", "t": True}
    assert val(f"{prefix}.value", obj, "/stage") == "ResponseComplete"
    assert val(f"{prefix}.value", obj, "stage") == "ResponseComplete"  # the leading '/' is optional
    assert val(f"{prefix}.value", obj, "/a~1b/m~0n/1/x") == "y"
    assert val(f"{prefix}.value", obj, "/a~1b/m~0n/0") == "10"
    assert val(f"{prefix}.value", obj, "/t") == "true"
    assert val(f"{prefix}.value", obj, "/nope") is None
    assert val(f"{prefix}.value", obj, "") == json.dumps(obj, separators=(",", ":"))
    assert val(f"{prefix}.obj", obj) == json.dumps(obj, indent=2)
    assert val(f"{prefix}.rawtime", obj) == "1700000000123456789"


def test_index_arguments_must_be_plain_numbers():
    from edgeguard.falco.compiler import CompileError

    for bad in ("01", "x", "-1"):
        with pytest.raises(CompileError):
            compile_field(("field", "ka.req.pod.containers.image", bad))
    with pytest.raises(CompileError):
        compile_field(("field", "ka.uri.param", None))  # key argument is required
    with pytest.raises(CompileError):
        compile_field(("field", "ka.verb", "x"))  # no argument allowed
    with pytest.raises(CompileError):
        compile_field(("field", "ka.nope", None))
