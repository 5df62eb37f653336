"""The patch algorithms on plain documents (RFC 7386 / RFC 6902 examples, strategic merge keys)."""

from __future__ import annotations

import pytest

from local.kubeemu.patch import PatchApplyError, PatchError, json_patch, merge_patch, strategic_merge_patch


@pytest.mark.parametrize(
    "target,patch,result",
    [  # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386_examples(target, patch, result):
    assert merge_patch(target, patch) == result


def test_json_patch_rfc6902_operations():
    doc = {"foo": ["bar", "baz"], "q": {"a": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/foo/1", "value": "qux"}])["foo"] == ["bar", "qux", "baz"]
    assert json_patch(doc, [{"op": "add", "path": "/foo/-", "value": "end"}])["foo"][-1] == "end"
    assert json_patch(doc, [{"op": "remove", "path": "/foo/0"}])["foo"] == ["baz"]
    assert json_patch(doc, [{"op": "replace", "path": "/q/a", "value": 2}])["q"] == {"a": 2}
    assert json_patch(doc, [{"op": "move", "from": "/q/a", "path": "/q/b"}])["q"] == {"b": 1}
    assert json_patch(doc, [{"op": "copy", "from": "/q", "path": "/r"}])["r"] == {"a": 1}
    assert json_patch({"a/b": {"m~n": 1}}, [{"op": "test", "path": "/a~1b/m~0n", "value": 1}]) == {"a/b": {"m~n": 1}}
    assert doc == {"foo": ["bar", "baz"], "q": {"a": 1}}  # input untouched


@pytest.mark.parametrize(
    "ops,error",
    [
        ([{"op": "test", "path": "/a", "value": 2}], PatchApplyError),
        ([{"op": "replace", "path": "/missing", "value": 2}], PatchApplyError),
        ([{"op": "remove", "path": "/list/5"}], PatchApplyError),
        ([{"op": "add", "path": "/list/01", "value": 0}], PatchApplyError),
        ([{"op": "add", "path": "nope", "value": 0}], PatchApplyError),
        ([{"op": "add", "path": "/a"}], PatchApplyError),
        ([{"op": "jump", "path": "/a"}], PatchApplyError),
        ({"op": "add"}, PatchError),
        (["add"], PatchError),
    ],
)
def test_json_patch_errors(ops, error):
    with pytest.raises(error):
        json_patch({"a": 1, "list": [1]}, ops)


def test_strategic_merge_keys_follow_the_go_types():
    pod = {
        "containers": [
            {
                "name": "a",
                "ports": [{"containerPort": 80, "name": "http"}],
                "volumeMounts": [{"name": "v", "mountPath": "/x"}],
            }
        ],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "tolerations": [{"key": "t"}],
    }
    out = strategic_merge_patch(
        pod,
        {
            "containers": [
                {"name": "a", "ports": [{"containerPort": 81}], "volumeMounts": [{"name": "w", "mountPath": "/x"}]}
            ],
            "volumes": [{"name": "v", "$patch": "delete"}, {"name": "w", "secret": {"secretName": "s"}}],
            "tolerations": [{"key": "u"}],
        },
    )
    c = out["containers"][0]
    assert [p["containerPort"] for p in c["ports"]] == [80, 81]
    assert c["volumeMounts"] == [{"name": "w", "mountPath": "/x"}]  # merged on mountPath, not name
    assert out["volumes"] == [{"name": "w", "secret": {"secretName": "s"}}]
    assert out["tolerations"] == [{"key": "u"}]


def test_strategic_merge_directives():
    meta = {"finalizers": ["a", "b"], "labels": {"x": "1"}}
    assert strategic_merge_patch(meta, {"finalizers": ["c"]})["finalizers"] == ["a", "b", "c"]
    assert strategic_merge_patch(meta, {"$deleteFromPrimitiveList/finalizers": ["a"]})["finalizers"] == ["b"]
    assert strategic_merge_patch(meta, {"labels": {"$patch": "replace", "y": "2"}})["labels"] == {"y": "2"}
    assert "labels" not in strategic_merge_patch(meta, {"labels": {"$patch": "delete"}})
    env = {"env": [{"name": "A"}, {"name": "B"}]}
    assert strategic_merge_patch(
        {"containers": [{"name": "c", **env}]},
        {"containers": [{"name": "c", "env": [{"$patch": "replace"}, {"name": "Z"}]}]},
    )["containers"][0]["env"] == [{"name": "Z"}]
    with pytest.raises(PatchError):
        strategic_merge_patch({}, {"containers": [{"image": "no-name"}]})
