"""Each upstream quirk the references record, matched on purpose and named here (see docs/audit-ingest.md)."""

from __future__ import annotations

from edgeguard.falco import loader
from edgeguard.falco.compiler import compile_field

from .conftest import event, matches, rule_text

BASE = {
    "kind": "Event",
    "auditID": "q",
    "stage": "ResponseComplete",
    "verb": "create",
    "user": {"username": "alice", "groups": []},
    "objectRef": {"resource": "pods", "name": "/var/run/x"},
    "responseStatus": {"code": 404},
}


def val(name, obj, arg=None):
    return compile_field(("field", name, arg)).fetch(event(obj))


def test_quirk_glob_star_crosses_slashes_unlike_the_docs():
    assert matches("ka.target.name glob /var/*", BASE)


def test_quirk_string_less_than_is_strcmp_even_for_numbers():
    assert matches("ka.response.code < 99", BASE)  # "404" < "99" as strings
    assert not matches("ka.response.code > 99", BASE)


def test_quirk_invalid_re2_posix_regex_loads_but_never_matches():
    rs = loader.load([("t.yaml", rule_text("ka.user.name regex '(?i)ALICE'"))])
    assert len(rs.rules) == 1
    assert not matches("ka.user.name regex '(?i)ALICE'", BASE)
    assert matches("ka.user.name regex alic.", BASE)


def test_quirk_empty_plugin_list_is_absent_so_len_zero_never_matches():
    assert val("ka.user.groups", BASE) is None
    assert not matches("len(ka.user.groups) = 0", BASE)
    assert matches("not ka.user.groups exists", BASE)


def test_quirk_explicit_json_null_is_the_string_null_and_exists():
    obj = dict(BASE, impersonatedUser={"username": None})
    assert val("ka.impuser.name", obj) == "null"
    assert matches("ka.impuser.name exists and ka.impuser.name = null", obj)


def test_quirk_sourceips_reads_request_object_rules_so_is_normally_absent():
    obj = dict(BASE, sourceIPs=["10.0.0.1"])
    assert val("ka.sourceips", obj) is None
    assert val("ka.sourceips", dict(obj, requestObject={"rules": [{"sourceIPs": ["1.2.3.4"]}]})) == ("1.2.3.4",)


def test_quirk_eff_run_as_user_ignores_security_context():
    obj = dict(
        BASE,
        requestObject={
            "spec": {
                "securityContext": {"runAsUser": 1000},
                "containers": [{"image": "x", "securityContext": {"runAsUser": 5}}],
            }
        },
    )
    assert val("ka.req.pod.containers.eff_run_as_user", obj) == ("0",)
    assert val("ka.req.pod.containers.run_as_user", obj) == ("5",)


def test_quirk_image_repository_is_cut_at_the_first_colon_even_a_registry_port():
    obj = dict(BASE, requestObject={"spec": {"containers": [{"image": "registry.local:5000/team/app:1.0"}]}})
    assert val("ka.req.pod.containers.image.repository", obj) == ("registry.local",)


def test_quirk_service_ports_is_one_json_value_and_the_index_is_ignored():
    obj = dict(BASE, requestObject={"spec": {"ports": [{"port": 1}, {"port": 2}]}})
    assert val("ka.req.service.ports", obj) == ('[{"port":1},{"port":2}]',)
    assert val("ka.req.service.ports", obj, "1") == ('[{"port":1},{"port":2}]',)


def test_quirk_add_capabilities_is_one_json_value_per_container():
    obj = dict(
        BASE,
        requestObject={
            "spec": {
                "containers": [{"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}, {"securityContext": {}}]
            }
        },
    )
    assert val("ka.req.pod.containers.add_capabilities", obj) == ('["NET_ADMIN"]',)


def test_quirk_exception_values_are_condition_text():
    # values are pasted into the condition: "val(ka.verb)" becomes a field comparison, always true here.
    text = rule_text(
        "ka.verb=create",
        extra_keys="  exceptions:\n    - name: e\n      fields: [ka.verb]\n      values: [[val(ka.verb)]]\n",
    )
    from edgeguard.falco.engine import Engine

    assert Engine(loader.load([("t.yaml", text)])).match(event(BASE)) == []


def test_quirk_binding_subject_has_name_is_always_true():
    assert val("ka.req.binding.subject.has_name", BASE, "nobody") == "true"


def test_quirk_host_network_is_scalar_yet_intersects_works_like_equals():
    obj = dict(BASE, requestObject={"spec": {"hostNetwork": True}})
    assert matches("ka.req.pod.host_network intersects (true)", obj)
    assert matches("ka.req.pod.host_network = true", obj)
