"""No data loss under faults: every API call of a move fails once (409, 500, timeout, 403, or the reply is
lost after the write applied), or the process dies between any two calls. Before every request the
emulator sees, and after each run, every original value must be readable from the ConfigMap or the
Secret; re-runs must converge to the moved state and then change nothing."""

from __future__ import annotations

import base64

import pytest

from .conftest import configmap, deployment, kube_client, pod_spec, submodule, workload, writes

ORIGINAL = {"aws_access_key_id": b"AKES20LNOA", "DB_PASSWORD": b"IfWqrAz2KrHhSyrntT1L"}
PLAIN = {"region": "eu-west-1"}
SECRET = "aws-creds-credentials"


def seed(emu, ns):
    data = {k: v.decode() for k, v in ORIGINAL.items()}
    data.update(PLAIN)
    emu.seed(configmap("aws-creds", data, ns=ns))
    emu.seed(deployment("web", ns=ns, spec=pod_spec(env=True, env_from=True, volume=True)))
    emu.seed(
        workload(
            "StatefulSet",
            "db",
            pod_spec(
                key="DB_PASSWORD",
                volume=True,
                items=[{"key": "DB_PASSWORD", "path": "pw"}, {"key": "region", "path": "region"}],
            ),
            ns=ns,
        )
    )
    emu.seed(workload("CronJob", "backup", pod_spec(key="DB_PASSWORD"), ns=ns))


def readable(emu, ns) -> list[str]:
    """Original values that are in neither the ConfigMap nor the Secret right now."""
    cm = emu.get("configmaps", ns, "aws-creds") or {}
    sec = emu.get("secrets", ns, SECRET) or {}
    lost = []
    for k, v in ORIGINAL.items():
        in_cm = (cm.get("data") or {}).get(k, "").encode() == v
        in_sec = base64.b64decode((sec.get("data") or {}).get(k, "")) == v
        if not (in_cm or in_sec):
            lost.append(k)
    for k, v in PLAIN.items():
        if (cm.get("data") or {}).get(k) != v:
            lost.append(k)
    return lost


class Watch:
    """Checks the invariant before every request the emulator receives (i.e. after every state change)."""

    def __init__(self, emu, ns):
        self.emu, self.ns, self.violations = emu, ns, []
        emu.before(self)

    def __call__(self, verb, resource, namespace, name, body):
        lost = readable(self.emu, self.ns)
        if lost:
            self.violations.append((verb, resource, name, lost))


def assert_converged(emu, ns):
    cm = emu.get("configmaps", ns, "aws-creds")
    sec = emu.get("secrets", ns, SECRET)
    assert cm["data"] == PLAIN
    assert {k: base64.b64decode(v) for k, v in sec["data"].items()} == ORIGINAL
    dep = emu.get("deployments", ns, "web")["spec"]["template"]["spec"]
    assert dep["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    sts = emu.get("statefulsets", ns, "db")["spec"]["template"]["spec"]
    assert sts["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"] == {"name": SECRET, "key": "DB_PASSWORD"}
    assert sts["volumes"][0]["projected"]["sources"] == [
        {"configMap": {"name": "aws-creds", "defaultMode": 0o440, "items": [{"key": "region", "path": "region"}]}},
        {"secret": {"name": SECRET, "items": [{"key": "DB_PASSWORD", "path": "pw"}]}},
    ]
    cj = emu.get("cronjobs", ns, "backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cj["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    assert [e["reason"] for e in emu.list("events", ns)] == ["CredentialsMoved"]


def rerun_until_converged(call, mod, emu, ns, limit=3):
    for _ in range(limit):
        status, body, _ = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
        assert status == 200, body
        if body["configmaps"][0]["status"] in ("moved", "clean"):
            break
    assert_converged(emu, ns)
    emu.clear_requests()
    status, body, _ = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "clean"
    assert writes(emu) == [], "a converged re-run must not write"


def clean_run_calls(emu, call, scrubber_fn):
    """(verb, resource) of every request a fault-free move makes, in order."""
    seed(emu, "probe")
    emu.clear_requests()
    status, body, _ = call(scrubber_fn(scrub_mode="move"), "POST", {"namespace": "probe", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    calls = []
    for verb, path, _ in emu.requests:
        parts = path.strip("/").split("/")
        resource = parts[parts.index("namespaces") + 2] if "namespaces" in parts else parts[-1]
        if (verb, resource) not in calls:
            calls.append((verb, resource))
    return calls


FAULTS = [(409, False), (500, False), ("timeout", False), (403, False), (500, True), ("timeout", True)]


@pytest.mark.parametrize("status,applied", FAULTS, ids=[f"{s}{'-applied' if a else ''}" for s, a in FAULTS])
def test_a_fault_at_any_api_call_loses_no_value_and_reruns_converge(kube_emulator, scrubber_fn, call, status, applied):
    emu = kube_emulator
    calls = clean_run_calls(emu, call, scrubber_fn)
    assert ("patch", "configmaps") in calls and ("create", "secrets") in calls and ("patch", "deployments") in calls
    mod = scrubber_fn(scrub_mode="move", kube_timeout_seconds="0.25")
    tried = 0
    for i, (verb, resource) in enumerate(calls):
        if applied and verb in ("get", "list"):
            continue  # "applied but the reply was lost" only means something for writes
        ns = f"f{i}"
        seed(emu, ns)
        watch = Watch(emu, ns)
        emu.fail(
            verb,
            resource,
            status=status,
            times=1,
            namespace=ns,
            applied=applied,
            delay=0.6 if status == "timeout" else None,
        )
        code, body, resp = call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
        assert code in (200, 502), (verb, resource, body)
        assert watch.violations == [], (verb, resource, watch.violations)
        assert readable(emu, ns) == [], (verb, resource)
        assert "AKES20LNOA" not in resp["body"] and "IfWqrAz2KrHhSyrntT1L" not in resp["body"]
        emu.clear_faults()
        rerun_until_converged(call, mod, emu, ns)
        tried += 1
    expected_writes = {
        ("create", "secrets"),
        ("patch", "deployments"),
        ("patch", "statefulsets"),
        ("patch", "cronjobs"),
        ("patch", "configmaps"),
        ("create", "events"),
        ("patch", "secrets"),
    }
    assert expected_writes <= set(calls)
    assert tried == (len(expected_writes) if applied else len(calls)) and len(calls) >= 15


def test_a_fault_that_persists_never_loses_a_value(kube_emulator, scrubber_fn, call):
    emu = kube_emulator
    calls = clean_run_calls(emu, call, scrubber_fn)
    mod = scrubber_fn(scrub_mode="move")
    for i, (verb, resource) in enumerate(calls):
        ns = f"p{i}"
        seed(emu, ns)
        watch = Watch(emu, ns)
        emu.fail(verb, resource, status=409 if verb == "patch" else 500, times=None, namespace=ns)
        call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
        call(mod, "POST", {"namespace": ns, "name": "aws-creds"})
        assert watch.violations == [] and readable(emu, ns) == [], (verb, resource)
        emu.clear_faults()
        rerun_until_converged(call, mod, emu, ns)


def test_dying_between_any_two_calls_loses_no_value_and_reruns_converge(kube_emulator, scrubber_fn, call):
    emu = kube_emulator
    mod = scrubber_fn(scrub_mode="move")
    remediate = submodule(mod, "remediate")
    detect = submodule(mod, "detect")

    class Dying:
        def __init__(self, kube, at):
            self.kube, self.at, self.calls = kube, at, 0

        def __getattr__(self, attr):
            fn = getattr(self.kube, attr)

            def wrapped(*a, **kw):
                if self.calls == self.at:
                    raise remediate.Died()
                self.calls += 1
                return fn(*a, **kw)

            return wrapped

    def scrubber(at=None):
        k = kube_client(mod, emu, timeout=2)
        return remediate.Scrubber(
            Dying(k, at) if at is not None else k,
            detect.Detector(b"k"),
            remediate.Settings(mode="move", rollout_timeout=3, rollout_poll=0.02),
        )

    seed(emu, "probe")
    counter = Dying(kube_client(mod, emu), at=-1)
    remediate.Scrubber(counter, detect.Detector(b"k"), remediate.Settings(mode="move", rollout_poll=0.02)).process(
        "probe", "aws-creds"
    )
    total = counter.calls
    assert total >= 15
    for at in range(total):
        ns = f"d{at}"
        seed(emu, ns)
        watch = Watch(emu, ns)
        with pytest.raises(remediate.Died):
            scrubber(at).process(ns, "aws-creds")
        assert watch.violations == [] and readable(emu, ns) == [], at
        # a new process picks up where the dead one stopped and may die too, at another point
        try:
            scrubber(at // 2).process(ns, "aws-creds")
        except remediate.Died:
            pass
        assert watch.violations == [] and readable(emu, ns) == [], at
        out = scrubber().process(ns, "aws-creds")
        assert out.status in ("moved", "clean"), (at, out.public())
        assert watch.violations == [], at
        assert_converged(emu, ns)
        emu.clear_faults()
        emu.clear_requests()
        assert scrubber().process(ns, "aws-creds").status == "clean"
        assert writes(emu) == [], at


def test_concurrent_edit_of_the_configmap_during_the_move_keeps_the_new_value(kube_emulator, scrubber_fn, call):
    """Someone changes a credential between our copy and our removal: we must not remove their new value."""
    emu = kube_emulator
    seed(emu, "c")
    mod = scrubber_fn(scrub_mode="move")
    edited = []

    def edit_before_removal(verb, resource, namespace, name, body):
        if verb == "patch" and resource == "configmaps" and not edited:
            edited.append(True)
            cm = emu.get("configmaps", "c", "aws-creds")
            cm["data"]["DB_PASSWORD"] = "N3wPassw0rd-after-copy"
            # hooks run on the emulator's loop: write through its store, as a PUT from another client would
            emu.store.update(emu.resource("configmaps"), "c", "aws-creds", cm)

    emu.before(edit_before_removal)
    status, body, _ = call(mod, "POST", {"namespace": "c", "name": "aws-creds"})
    (cm,) = body["configmaps"]
    assert cm["status"] == "conflict" and "DB_PASSWORD changed" in cm["reasons"][0]
    assert emu.get("configmaps", "c", "aws-creds")["data"]["DB_PASSWORD"] == "N3wPassw0rd-after-copy"
    sec = emu.get("secrets", "c", SECRET)
    assert base64.b64decode(sec["data"]["DB_PASSWORD"]) == ORIGINAL["DB_PASSWORD"]
    # the next run refuses to overwrite the Secret's copy with a different value: a human decides
    emu.clear_faults()
    status, body, _ = call(mod, "POST", {"namespace": "c", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "blocked"
    assert "different value for key DB_PASSWORD" in body["configmaps"][0]["reasons"][0]


def readable_immutable(emu, ns) -> list[str]:
    """Like readable(), for the replacement path: original, replacement (aws-creds-v2) or Secret."""
    homes = [emu.get("configmaps", ns, "aws-creds") or {}, emu.get("configmaps", ns, "aws-creds-v2") or {}]
    sec = emu.get("secrets", ns, SECRET) or {}
    lost = []
    for k, v in ORIGINAL.items():
        if (
            not any((h.get("data") or {}).get(k, "").encode() == v for h in homes)
            and base64.b64decode((sec.get("data") or {}).get(k, "")) != v
        ):
            lost.append(k)
    for k, v in PLAIN.items():
        if not any((h.get("data") or {}).get(k) == v for h in homes):
            lost.append(k)
    return lost


def test_dying_anywhere_while_replacing_an_immutable_configmap_loses_nothing(kube_emulator, scrubber_fn):
    emu = kube_emulator
    mod = scrubber_fn(scrub_mode="move")
    remediate, detect = (submodule(mod, n) for n in ("remediate", "detect"))

    class Dying:
        def __init__(self, kube, at):
            self.kube, self.at, self.calls = kube, at, 0

        def __getattr__(self, attr):
            fn = getattr(self.kube, attr)

            def wrapped(*a, **kw):
                if self.calls == self.at:
                    raise remediate.Died()
                self.calls += 1
                return fn(*a, **kw)

            return wrapped

    def scrubber(at=-1):
        k = Dying(kube_client(mod, emu, timeout=2), at)
        return k, remediate.Scrubber(
            k,
            detect.Detector(b"k"),
            remediate.Settings(mode="move", rollout_timeout=3, rollout_poll=0.02, allow_immutable=True),
        )

    def seed_immutable(ns):
        data = {k: v.decode() for k, v in ORIGINAL.items()}
        data.update(PLAIN)
        emu.seed(configmap("aws-creds", data, ns=ns, immutable=True))
        emu.seed(deployment("web", ns=ns, spec=pod_spec(env=True, env_from=True, volume=True)))

    seed_immutable("probe")
    counter, s = scrubber()
    assert s.process("probe", "aws-creds").status == "moved"
    total = counter.calls
    assert emu.get("configmaps", "probe", "aws-creds") is None
    for at in range(total):
        ns = f"i{at}"
        seed_immutable(ns)
        lost = []
        emu.before(lambda *a, ns=ns, lost=lost: lost.extend(readable_immutable(emu, ns)))
        with pytest.raises(remediate.Died):
            scrubber(at)[1].process(ns, "aws-creds")
        assert lost == [] and readable_immutable(emu, ns) == [], at
        out = scrubber()[1].process(ns, "aws-creds")
        if out.status == "not_found":  # died after the delete: only the Secret annotation was left
            out = scrubber()[1].process(ns, "aws-creds-v2")
        assert out.status in ("moved", "clean"), (at, out.public())
        assert lost == [] and readable_immutable(emu, ns) == [], at
        assert emu.get("configmaps", ns, "aws-creds") is None
        assert emu.get("configmaps", ns, "aws-creds-v2")["data"] == PLAIN
        emu.clear_faults()


def test_a_generic_422_from_a_lost_race_is_retried_and_a_real_422_is_not(kube_emulator, scrubber_fn, call):
    """Some API servers word a failed `test` op generically; the scrubber re-reads to tell a race from an error."""
    emu = kube_emulator
    seed(emu, "r")
    mod = scrubber_fn(scrub_mode="move")
    bumped = []

    def touch_configmap(verb, resource, namespace, name, body):
        if verb == "patch" and resource == "configmaps" and not bumped:
            bumped.append(True)
            cm = emu.get("configmaps", "r", "aws-creds")
            cm["metadata"].setdefault("labels", {})["touched"] = "yes"  # new resourceVersion, same values
            emu.store.update(emu.resource("configmaps"), "r", "aws-creds", cm)

    emu.before(touch_configmap)
    emu.fail(
        "patch",
        "configmaps",
        status=422,
        times=1,
        namespace="r",
        message="the server rejected our request due to an error in our request",
    )
    status, body, _ = call(mod, "POST", {"namespace": "r", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "moved", body
    assert emu.get("configmaps", "r", "aws-creds")["metadata"]["labels"]["touched"] == "yes"

    emu.clear_faults()
    seed(emu, "v")
    emu.fail("patch", "configmaps", status=422, times=1, namespace="v", message="Invalid value")
    status, body, _ = call(mod, "POST", {"namespace": "v", "name": "aws-creds"})
    assert body["configmaps"][0]["status"] == "error" and readable(emu, "v") == []


def test_a_key_the_configmap_does_not_hold_is_refused_before_any_secret_is_written(kube_emulator, scrubber_fn):
    """ensure_secret with a key missing from its copy of the ConfigMap: a reason, no Secret (was a TypeError)."""
    emu = kube_emulator
    mod = scrubber_fn(scrub_mode="move")
    remediate, detect = submodule(mod, "remediate"), submodule(mod, "detect")
    seed(emu, "absent-key")
    s = remediate.Scrubber(kube_client(mod, emu), detect.Detector(b"k"), remediate.Settings(mode="move"))
    cm = kube_client(mod, emu).get("ConfigMap", "absent-key", "aws-creds")
    ok, reason = s.ensure_secret(cm, {"no-such-key"}, "aws-creds-credentials", [])
    assert (ok, reason) == (False, "ConfigMap aws-creds has no key no-such-key to move")
    assert writes(emu) == []
