"""Every operator of the condition language, with libsinsp's semantics for strings, lists and absent fields."""

from __future__ import annotations

import pytest

from edgeguard.falco.loader import RulesLoadError

from .conftest import engine_for, matches, rule_text

EVT = {
    "kind": "Event",
    "auditID": "a1",
    "stage": "ResponseComplete",
    "verb": "create",
    "requestURI": "/api/v1/namespaces/default/pods?dryRun=All&x=1",
    "userAgent": "kubectl/v1.29 (linux)",
    "user": {"username": "Alice", "groups": ["system:masters", "system:authenticated"]},
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web-1"},
    "responseStatus": {"code": 404},
    "requestObject": {
        "spec": {
            "containers": [{"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "busybox"}],
            "volumes": [{"name": "v", "hostPath": {"path": "/var/run/docker.sock"}}],
        }
    },
    "stageTimestamp": "2024-05-01T10:11:12.123456789Z",
}


@pytest.mark.parametrize(
    "cond,expected",
    [
        ("ka.verb = create", True),
        ("ka.verb == create", True),
        ("ka.verb = Create", False),
        ("ka.verb != delete", True),
        ("ka.verb != create", False),
        # strings compare byte-wise even against numbers: "404" > "99" is false
        ("ka.response.code > 99", False),
        ("ka.response.code < 99", True),
        ("ka.response.code >= 404", True),
        ("ka.response.code <= 403", False),
        ("ka.user.name contains lic", True),
        ("ka.user.name contains LIC", False),
        ("ka.user.name icontains LIC", True),
        ("ka.user.name startswith Al", True),
        ("ka.user.name endswith ce", True),
        ("ka.user.name startswith al", False),
        ("ka.uri glob /api/*", True),  # '*' crosses '/' (fnmatch without FNM_PATHNAME)
        ("ka.uri glob /api/v?/namespaces/*", True),
        ("ka.uri glob '/api/[!v]*'", False),
        ("ka.uri glob '/api/[^v]*'", False),
        ("ka.uri glob '/api/[uv]1*'", True),
        ("ka.user.name iglob 'ALI*'", True),
        ("ka.user.name glob 'ALI*'", False),
        ("ka.verb in (get, create)", True),
        ("ka.verb in (get, list)", False),
        ("ka.verb intersects (create)", True),
        ("ka.uri pmatch (/api/v1)", True),
        ("ka.uri pmatch (/api/v2)", False),
        ("ka.target.namespace pmatch (/default)", True),
        ("ka.user.name regex 'A[a-z]+'", True),
        ("ka.user.name regex 'A[a-z]'", False),  # full match
        ("ka.user.name regex \\w+", False),  # Perl class is invalid in RE2 POSIX: loads, never matches
        ("ka.user.name regex '[[:alpha:]]+'", True),
        ("ka.user.name exists", True),
        ("ka.impuser.name exists", False),
    ],
)
def test_string_operators(cond, expected):
    assert matches(cond, EVT) is expected


@pytest.mark.parametrize(
    "cond,expected",
    [
        ("ka.req.pod.containers.image in (nginx:1.25, busybox)", True),  # in: ALL values in the set
        ("ka.req.pod.containers.image in (nginx:1.25)", False),
        ("ka.req.pod.containers.image intersects (nginx:1.25)", True),  # intersects: ANY value
        ("ka.req.pod.containers.image intersects (alpine)", False),
        ("ka.req.pod.containers.image exists", True),
        ("ka.req.pod.containers.image[1] in (busybox)", True),  # index selects one container
        ("ka.req.pod.containers.image[5] exists", False),  # out of range: absent
        ("ka.user.groups intersects (system:masters)", True),
    ],
)
def test_list_field_operators(cond, expected):
    assert matches(cond, EVT) is expected


@pytest.mark.parametrize(
    "cond",
    [
        "ka.impuser.name = x",
        "ka.impuser.name != x",
        "ka.impuser.name in (x)",
        "ka.impuser.name contains x",
        "ka.impuser.name glob '*'",
        "ka.impuser.name pmatch (/)",
        "ka.impuser.name regex '.*'",
        "ka.impuser.name < 9",
        "ka.sourceips intersects (1.2.3.4)",
    ],
)
def test_absent_field_makes_every_comparison_false_and_not_true(cond):
    assert matches(cond, EVT) is False
    assert matches(f"not {cond}", EVT) is True


def test_not_equal_differs_from_not_equals_on_absent_field():
    assert matches("ka.impuser.name != bob", EVT) is False
    assert matches("not ka.impuser.name = bob", EVT) is True


@pytest.mark.parametrize("op", ["=", "!=", "contains", "startswith", "pmatch", "glob"])
def test_list_fields_only_accept_in_intersects_exists(op):
    rhs = "(x)" if op == "pmatch" else "x"
    with pytest.raises(RulesLoadError) as exc:
        engine_for(rule_text(f"ka.user.groups {op} {rhs}"))
    assert exc.value.code == "LOAD_ERR_COMPILE_CONDITION"
    assert "operator not supported list filters" in exc.value.reason


@pytest.mark.parametrize("op", ["bcontains", "bstartswith"])
def test_byte_operators_are_a_compile_error_on_string_fields(op):
    # Falco: bcontains/bstartswith only compare byte-buffer fields; every ka.*/jevt.* field is a string.
    with pytest.raises(RulesLoadError) as exc:
        engine_for(rule_text(f"ka.user.name {op} 416c"))
    assert exc.value.code == "LOAD_ERR_COMPILE_CONDITION" and op in exc.value.reason


@pytest.mark.parametrize(
    "cond,expected",
    [
        ("tolower(ka.user.name) = alice", True),
        ("toupper(ka.user.name) = ALICE", True),
        ("basename(ka.uri) = 'pods?dryRun=All&x=1'", True),
        ("len(ka.user.name) = 5", True),
        ("len(ka.user.groups) = 2", True),
        ("len(ka.user.groups) > 1", True),
        ("b64(ka.target.name) exists", False),  # "web-1" is not base64: the field becomes absent
        ("ka.user.name = val(ka.user.name)", True),
        ("ka.verb = val(ka.stage)", False),
        ("ka.verb != val(ka.impuser.name)", False),  # absent right-hand field: false
        ("tolower(ka.user.name) = tolower(ka.user.name)", True),
    ],
)
def test_transformers_and_field_comparisons(cond, expected):
    assert matches(cond, EVT) is expected


def test_b64_decodes_with_or_without_padding():
    e = dict(EVT, objectRef={"name": "aGVsbG8", "resource": "secrets"})
    assert matches("b64(ka.target.name) = hello", e)


def test_quirk_transformed_list_field_never_matches_in():
    # libs 0.21: string transformers append a NUL that list membership keeps (reference §3.5).
    assert matches("tolower(ka.user.groups) intersects (system:masters)", EVT) is False
    assert matches("ka.user.groups intersects (system:masters)", EVT) is True


def test_field_to_field_needs_the_same_type_and_listness():
    with pytest.raises(RulesLoadError) as exc:
        engine_for(rule_text("ka.user.name = val(ka.user.groups)"))
    assert "incompatible type" in exc.value.reason


def test_numeric_field_needs_an_integer_constant():
    assert matches("evt.rawtime > 1", EVT)
    with pytest.raises(RulesLoadError):
        engine_for(rule_text("evt.rawtime > 1.5"))


def test_glob_backslash_escapes_the_next_character():
    e = dict(EVT, user={"username": "a*b"})
    # (a bare word: inside quotes "\*" would be an unsupported escape sequence)
    assert matches("ka.user.name glob a\\*b", e)
    assert not matches("ka.user.name glob a\\*c", e)
    assert not matches("ka.user.name glob a\\*b", dict(EVT, user={"username": "axb"}))


def test_icontains_folds_ascii_only():
    e = dict(EVT, user={"username": "ÉCOLE"})
    assert not matches("ka.user.name icontains école", e)
    assert matches("ka.user.name icontains Écolé", dict(EVT, user={"username": "ÉCOLé"}))


def test_pmatch_is_component_wise_with_globs():
    for path, expected in [("/var/run", True), ("/var/run/x", True), ("/var/running", False), ("/var", False)]:
        e = dict(EVT, objectRef={"name": path})
        assert matches("ka.target.name pmatch (/var/run)", e) is expected, path
    assert matches("ka.target.name pmatch (/var/r*)", dict(EVT, objectRef={"name": "/var/run/x"}))
    assert matches("ka.target.name pmatch (/)", dict(EVT, objectRef={"name": "/anything"}))


def test_and_or_not_short_circuit_with_precedence():
    assert matches("ka.verb = get or ka.verb = create and ka.user.name = Alice", EVT)
    assert not matches("(ka.verb = get or ka.verb = create) and ka.user.name = Bob", EVT)
    assert matches("not (ka.verb = get)", EVT)
