"""What a node may ask for: request fields, label prefixes, refused labels, the allowlist."""

from __future__ import annotations

import pytest

from tests.node_enroll.helpers import sub

GOOD = {"hostname": "Pi-North-01", "arch": "aarch64", "machine_id": "0123456789abcdef0123456789abcdef"}


@pytest.fixture
def policy(enroll_fn):
    return sub(enroll_fn(), "policy")


def test_request_is_normalised_to_node_name_and_goarch(policy):
    req = policy.parse_request(dict(GOOD))
    assert (req.hostname, req.arch, req.rotate) == ("pi-north-01", "arm64", False)


@pytest.mark.parametrize(
    "doc,fragment",
    [
        ([], "JSON object"),
        ({"hostname": "a"}, "missing field(s): arch, machine_id"),
        ({**GOOD, "extra": 1}, "unknown field(s): extra"),
        ({**GOOD, "hostname": "bad_name!"}, "valid node name"),
        ({**GOOD, "hostname": "a" * 254}, "valid node name"),
        ({**GOOD, "arch": "m68k"}, "unsupported arch"),
        ({**GOOD, "machine_id": "short"}, "machine_id"),
        ({**GOOD, "machine_id": "x" * 129}, "machine_id"),
        ({**GOOD, "hostname": 5}, "must be strings"),
        ({**GOOD, "labels": ["a=b"]}, "labels must be an object"),
        ({**GOOD, "rotate": "yes"}, "rotate must be true or false"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(policy, doc, fragment):
    with pytest.raises(policy.PolicyError) as exc:
        policy.parse_request(doc)
    assert exc.value.status == 400 and fragment in exc.value.reason


def decide(policy, labels=None, allowlist=(), prefixes=("node.edgeguard.io/",), **over):
    req = policy.parse_request({**GOOD, **over, "labels": labels or {}})
    return policy.decide(req, allowlist=allowlist, allowed_prefixes=prefixes)


def test_requested_labels_with_allowed_prefix_are_kept_and_enrolled_label_added(policy):
    d = decide(policy, {"node.edgeguard.io/site": "north"})
    assert d.labels == {"node.edgeguard.io/site": "north", "edgeguard.io/enrolled-by": "node-enroll"}
    assert d.taints == ()


@pytest.mark.parametrize(
    "key,status,fragment",
    [
        ("node-role.kubernetes.io/worker", 422, "kubelet rejects self-assigned node-role"),
        ("node.kubernetes.io/instance-type", 422, "kubernetes.io / k8s.io"),
        ("example.k8s.io/x", 422, "kubernetes.io / k8s.io"),
        ("other.example.com/site", 422, "allowed prefix"),
        ("site", 422, "allowed prefix"),
        ("node.edgeguard.io/bad key", 422, "invalid name"),
        ("Node.Edgeguard.io/x", 422, "invalid prefix"),
    ],
)
def test_refused_label_keys(policy, key, status, fragment):
    with pytest.raises(policy.PolicyError) as exc:
        decide(policy, {key: "v"})
    assert exc.value.status == status and fragment in exc.value.reason


def test_node_role_is_refused_even_if_an_operator_allows_its_prefix(policy):
    with pytest.raises(ValueError, match="kubelet refuses"):
        policy.parse_prefixes("node-role.kubernetes.io/")
    with pytest.raises(policy.PolicyError, match="node-role"):
        decide(policy, {"node-role.kubernetes.io/edge": ""}, prefixes=("node-role.kubernetes.io/",))


def test_bad_label_value_is_refused(policy):
    with pytest.raises(policy.PolicyError, match="invalid value"):
        decide(policy, {"node.edgeguard.io/site": "north pole"})


ALLOWLIST = """
- hostname: "pi-north-*"
  labels: {edge.example.com/site: north}
  taints: ["edge.example.com/dedicated=edge:NoSchedule"]
- machine_id: "ffffffffffffffffffffffffffffffff"
  labels: {edge.example.com/site: lab}
"""


def test_allowlist_maps_hostname_pattern_to_labels_and_taints(policy):
    d = decide(policy, {"node.edgeguard.io/x": "1"}, allowlist=policy.parse_allowlist(ALLOWLIST))
    assert d.labels == {
        "node.edgeguard.io/x": "1",
        "edge.example.com/site": "north",
        "edgeguard.io/enrolled-by": "node-enroll",
    }
    assert d.taints == ("edge.example.com/dedicated=edge:NoSchedule",)
    assert d.matched.startswith("entry 0")


def test_allowlist_matches_machine_id(policy):
    d = decide(policy, allowlist=policy.parse_allowlist(ALLOWLIST), hostname="lab-box", machine_id="f" * 32)
    assert d.labels["edge.example.com/site"] == "lab" and d.taints == ()


def test_allowlist_labels_override_what_the_node_asked_for(policy):
    d = decide(
        policy,
        {"edge.example.com/site": "south"},
        allowlist=policy.parse_allowlist(ALLOWLIST),
        prefixes=("edge.example.com/",),
    )
    assert d.labels["edge.example.com/site"] == "north"


def test_node_outside_a_configured_allowlist_is_refused(policy):
    with pytest.raises(policy.PolicyError) as exc:
        decide(policy, allowlist=policy.parse_allowlist(ALLOWLIST), hostname="rogue-1")
    assert exc.value.status == 403 and "allowlist" in exc.value.reason


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("{a: 1}", "must be a list"),
        ("- labels: {a.example.com/x: y}", "needs a hostname pattern or a machine_id"),
        ("- {hostname: x, colour: red}", "unknown keys: colour"),
        ("- {hostname: x, labels: {node-role.kubernetes.io/worker: ''}}", "node-role"),
        ("- {hostname: x, taints: ['a=b:Sometimes']}", "must end with :NoSchedule"),
        ("- {hostname: x, taints: ['bad key=v:NoSchedule']}", "invalid"),
        ("- [unclosed", "not valid YAML"),
    ],
)
def test_bad_allowlist_configuration_is_reported(policy, text, fragment):
    with pytest.raises(ValueError, match=None) as exc:
        policy.parse_allowlist(text)
    assert fragment in str(exc.value)


@pytest.mark.parametrize("taint", ["a.example.com/x=y:NoSchedule", "dedicated:NoExecute", "k=:PreferNoSchedule"])
def test_valid_taints_are_accepted(policy, taint):
    assert policy.parse_taint(taint) == taint


@pytest.mark.parametrize(
    "check",
    [
        lambda p: p.valid_node_name("pi-north-01\n") is False,
        lambda p: p.label_key_problem("node.edgeguard.io/site\n") is not None,
        lambda p: p.label_key_problem("node.edgeguard.io\n/site") is not None,
        lambda p: p.label_value_problem("k", "north\n") is not None,
    ],
)
def test_a_final_newline_never_passes_a_pattern(policy, check):
    """issue 17 §5: Python's ``$`` matches before a final newline; every pattern is matched in full."""
    assert check(policy)


def test_a_label_prefix_setting_with_a_final_newline_is_refused(policy):
    with pytest.raises(ValueError, match="DNS subdomain"):
        policy.parse_prefixes("node.edgeguard.io\n/")
