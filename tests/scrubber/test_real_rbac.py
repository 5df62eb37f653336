"""configmap-secret-scrubber with the least-privilege kubeconfig `edgeguard-bootstrap openfaas` made, on the real
kube-apiserver v1.24 RBAC (tests/realkube.py: `bootstrapped`, given --scrubber-namespaces default,edgeguard-granted).

Every flow still works with it (reports across namespaces, the move with a Deployment rolling out on the simulated
node), and what lies outside its role is refused by the API server itself (403), through the function and through
direct calls with the same kubeconfig. Writes in the direct calls are dry runs (dryRun=All is authorized exactly
like the write, and changes nothing even if it were allowed).
"""

from __future__ import annotations

import base64
import time
import uuid

import pytest

from tests.realkube import SCRUBBER_GRANTED, SCRUBBER_IMMUTABLE, SCRUBBER_NOT_GRANTED, api_status

from .conftest import FINGERPRINT_KEY, FN, TOKEN, deployment, pod_spec, workload

pytestmark = pytest.mark.cluster

GRANTED = SCRUBBER_GRANTED[1]
DENIED = 403
VALUE = "AKES20LNOA"


@pytest.fixture
def scrubber(bootstrapped, load_function):
    """Factory: the function from its build context, holding only the scrubber's ServiceAccount kubeconfig."""

    def load(**env):
        env = {"rollout_timeout_seconds": "60", "rollout_poll_seconds": "0.5", "rate_limit_per_minute": "1000", **env}
        return load_function(
            FN,
            env=env,
            secrets={
                "configmap-secret-scrubber-token": TOKEN,
                "configmap-secret-scrubber-fingerprint-key": FINGERPRINT_KEY,
                "configmap-secret-scrubber-kubeconfig": bootstrapped.kubeconfig(FN),
            },
        )

    return load


@pytest.fixture
def seed(bootstrapped):
    """Factory (as the admin): a ConfigMap holding the seed's key and a Deployment reading it; removed after."""
    core, apps = bootstrapped.cluster.core(), bootstrapped.cluster.apps()
    made = []

    def make(ns: str, with_deployment: bool = True) -> str:
        name = f"aws-creds-{uuid.uuid4().hex[:6]}"
        core.create_namespaced_config_map(
            ns,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name},
                "data": {"aws_access_key_id": VALUE, "region": "eu-west-1"},
            },
        )
        made.append(("cm", ns, name))
        if with_deployment:
            apps.create_namespaced_deployment(
                ns, deployment(name, ns=ns, replicas=1, spec=pod_spec(cm=name, env=True, env_from=True, volume=True))
            )
            made.append(("deploy", ns, name))
        return name

    yield make
    from kubernetes.client.rest import ApiException

    for kind, ns, name in made:
        doomed = (
            [(apps.delete_namespaced_deployment, name)]
            if kind == "deploy"
            else [(core.delete_namespaced_config_map, name), (core.delete_namespaced_secret, f"{name}-credentials")]
        )
        for delete, target in doomed:
            try:
                delete(target, ns)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def snapshot(cluster, ns, name):
    """What a refused move must leave alone: the ConfigMap (its resourceVersion), the Deployment's spec (its
    generation: the controllers keep writing its status), and the absence of the Secret."""
    from kubernetes.client.rest import ApiException

    core, apps = cluster.core(), cluster.apps()
    try:
        core.read_namespaced_secret(f"{name}-credentials", ns)
        secret = True
    except ApiException as exc:
        assert exc.status == 404
        secret = False
    dep = None
    try:
        dep = apps.read_namespaced_deployment(name, ns).metadata.generation
    except ApiException as exc:
        assert exc.status == 404
    return {
        "configmap": core.read_namespaced_config_map(name, ns).metadata.resource_version,
        "deployment": dep,
        "secret": secret,
    }


def test_report_reads_every_namespace_and_names_the_consumers_with_the_sa_kubeconfig(
    scrubber, seed, call, bootstrapped
):
    granted, other = seed(GRANTED), seed(SCRUBBER_NOT_GRANTED)
    before = {n: snapshot(bootstrapped.cluster, ns, n) for ns, n in ((GRANTED, granted), (SCRUBBER_NOT_GRANTED, other))}
    mod = scrubber(scrub_mode="report")
    status, body, resp = call(mod, "POST", {"all_namespaces": True})
    assert status == 200, body
    found = {(c["namespace"], c["name"]): c for c in body["configmaps"]}
    for ns, name in ((GRANTED, granted), (SCRUBBER_NOT_GRANTED, other)):
        c = found[(ns, name)]
        assert c["status"] == "would_move", c
        assert [(n["kind"], n["name"]) for n in c["consumers"]] == [("Deployment", name)], c
    assert VALUE not in resp["body"]
    assert {
        n: snapshot(bootstrapped.cluster, ns, n) for ns, n in ((GRANTED, granted), (SCRUBBER_NOT_GRANTED, other))
    } == before


def test_move_in_a_granted_namespace_rewires_and_rolls_out_on_the_simulated_node(scrubber, seed, call, bootstrapped):
    name = seed(GRANTED)
    core, apps = bootstrapped.cluster.core(), bootstrapped.cluster.apps()
    mod = scrubber(scrub_mode="move")
    status, body, resp = call(mod, "POST", {"namespace": GRANTED, "name": name})
    assert status == 200, body
    assert body["configmaps"][0]["status"] == "moved", body
    assert VALUE not in resp["body"]
    assert core.read_namespaced_config_map(name, GRANTED).data == {"region": "eu-west-1"}
    secret = core.read_namespaced_secret(f"{name}-credentials", GRANTED)
    assert base64.b64decode(secret.data["aws_access_key_id"]).decode() == VALUE
    dep = apps.read_namespaced_deployment(name, GRANTED)
    c = dep.spec.template.spec.containers[0]
    assert c.env[0].value_from.secret_key_ref.name == f"{name}-credentials"
    # the real controllers made a new ReplicaSet and the simulated kubelet started its pod from the Secret
    assert (dep.status.updated_replicas, dep.status.available_replicas) == (1, 1), dep.status
    events = [
        e
        for e in core.list_namespaced_event(GRANTED).items
        if e.involved_object.name == name and e.reason == "CredentialsMoved"
    ]
    assert events and VALUE not in events[0].message


def test_move_rewires_every_controller_kind_the_real_api_server_rolls_out(scrubber, seed, call, bootstrapped):
    """Strategic-merge patches of StatefulSet, DaemonSet and CronJob templates as the real API server merges them,
    and the rollouts its controllers and the simulated kubelet finish."""
    from kubernetes import client

    name = seed(GRANTED)
    admin = bootstrapped.cluster.api_client()
    apps, batch = client.AppsV1Api(admin), client.BatchV1Api(admin)
    spec = pod_spec(cm=name, env=True, volume=True, projected=False)
    apps.create_namespaced_stateful_set(GRANTED, workload("StatefulSet", f"{name}-db", spec, ns=GRANTED))
    apps.create_namespaced_daemon_set(GRANTED, workload("DaemonSet", f"{name}-agent", spec, ns=GRANTED))
    # suspended: a Job it started would be a reader the move has to wait for
    batch.create_namespaced_cron_job(GRANTED, workload("CronJob", f"{name}-backup", spec, ns=GRANTED, suspend=True))
    try:
        status, body, _ = call(scrubber(scrub_mode="move"), "POST", {"namespace": GRANTED, "name": name})
        assert status == 200 and body["configmaps"][0]["status"] == "moved", body
        secret_ref = {"name": f"{name}-credentials", "key": "aws_access_key_id"}
        sts = apps.read_namespaced_stateful_set(f"{name}-db", GRANTED)
        ds = apps.read_namespaced_daemon_set(f"{name}-agent", GRANTED)
        cron = batch.read_namespaced_cron_job(f"{name}-backup", GRANTED)
        for template in (sts.spec.template, ds.spec.template, cron.spec.job_template.spec.template):
            c = template.spec.containers[0]
            assert c.env[0].value_from.secret_key_ref.to_dict() == dict(secret_ref, optional=None)
            (vol,) = template.spec.volumes  # the other key stays in the ConfigMap: both, projected
            assert vol.config_map is None, vol
            assert [(x.config_map or x.secret).name for x in vol.projected.sources] == [name, f"{name}-credentials"]

        # The scrubber saw both roll out before it removed the key. Read back with a bounded wait: the simulated
        # kubelet can replace a StatefulSet pod that it sees deleted late (node_sim deletes by name, so a stale
        # event for the old pod hits its same-named successor under load), as a real node may restart one.
        def rolled_out():
            s = apps.read_namespaced_stateful_set(f"{name}-db", GRANTED).status
            d = apps.read_namespaced_daemon_set(f"{name}-agent", GRANTED).status
            return (
                s.updated_replicas == 1 and s.ready_replicas == 1 and d.updated_number_scheduled == d.number_ready == 1
            ), (s, d)

        deadline = time.monotonic() + 60
        while not (state := rolled_out())[0] and time.monotonic() < deadline:
            time.sleep(1)
        assert state[0], state[1]
    finally:
        apps.delete_namespaced_stateful_set(f"{name}-db", GRANTED)
        apps.delete_namespaced_daemon_set(f"{name}-agent", GRANTED)
        batch.delete_namespaced_cron_job(f"{name}-backup", GRANTED)


def test_an_immutable_configmap_is_replaced_where_bootstrap_granted_the_opt_in(scrubber, call, bootstrapped):
    """--scrubber-immutable-namespaces default: create and delete ConfigMaps there, nowhere else."""
    core, apps = bootstrapped.cluster.core(), bootstrapped.cluster.apps()
    ns, name = SCRUBBER_IMMUTABLE, f"frozen-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_config_map(
        ns,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name},
            "immutable": True,
            "data": {"aws_access_key_id": VALUE, "region": "eu-west-1"},
        },
    )
    apps.create_namespaced_deployment(
        ns, deployment(name, ns=ns, replicas=1, spec=pod_spec(cm=name, env=True, env_from=True))
    )
    try:
        fn = scrubber(scrub_mode="move", allow_immutable="true")
        status, body, _ = call(fn, "POST", {"namespace": ns, "name": name})
        assert status == 200 and body["configmaps"][0]["status"] == "moved", body
        assert api_status(core.read_namespaced_config_map, name, ns) == 404
        replacement = core.read_namespaced_config_map(f"{name}-v2", ns)
        assert replacement.immutable is True and replacement.data == {"region": "eu-west-1"}
        dep = apps.read_namespaced_deployment(name, ns)
        assert [
            e.config_map_ref.name if e.config_map_ref else e.secret_ref.name
            for e in dep.spec.template.spec.containers[0].env_from
        ] == [f"{name}-v2", f"{name}-credentials"]
        assert (dep.status.updated_replicas, dep.status.available_replicas) == (1, 1), dep.status
        # the same opt-in was not given for edgeguard-granted: there an immutable one stays, blocked by RBAC
    finally:
        apps.delete_namespaced_deployment(name, ns)
        for doomed in (name, f"{name}-v2"):
            api_status(core.delete_namespaced_config_map, doomed, ns)
        api_status(core.delete_namespaced_secret, f"{name}-credentials", ns)


def test_move_where_bootstrap_gave_no_write_role_is_refused_by_the_api_server(scrubber, seed, call, bootstrapped):
    name = seed(SCRUBBER_NOT_GRANTED)
    before = snapshot(bootstrapped.cluster, SCRUBBER_NOT_GRANTED, name)
    mod = scrubber(scrub_mode="move")
    status, body, _ = call(mod, "POST", {"namespace": SCRUBBER_NOT_GRANTED, "name": name})
    assert status == 200, body
    out = body["configmaps"][0]
    assert out["status"] == "error", out
    assert ": 403" in out["reasons"][0] and "configmap-secret-scrubber-namespace.yaml" in out["reasons"][0], out
    assert snapshot(bootstrapped.cluster, SCRUBBER_NOT_GRANTED, name) == before


def test_kube_system_is_refused_by_rbac_even_when_the_function_is_told_it_may_move_there(scrubber, call, bootstrapped):
    """report_only_namespaces is the function's own guard; RBAC is the one that holds when it is emptied."""
    core = bootstrapped.cluster.core()
    name = f"aws-creds-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_config_map(
        "kube-system",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"aws_access_key_id": VALUE}},
    )
    try:
        before = snapshot(bootstrapped.cluster, "kube-system", name)
        mod = scrubber(scrub_mode="move", report_only_namespaces="openfaas-fn")  # kube-system left out by mistake
        status, body, _ = call(mod, "POST", {"namespace": "kube-system", "name": name})
        assert status == 200, body
        assert body["configmaps"][0]["status"] == "error" and ": 403" in body["configmaps"][0]["reasons"][0], body
        assert snapshot(bootstrapped.cluster, "kube-system", name) == before
    finally:
        core.delete_namespaced_config_map(name, "kube-system")


def rbac_matrix(sa_core, sa_apps, sa_rbac, probe):
    """(what, call) pairs for the scrubber's ServiceAccount; ``probe`` is a Secret/ConfigMap name that exists."""
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rbac-probe"}, "data": {"a": "b"}}
    sec = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rbac-probe"}, "stringData": {"a": "b"}}
    patch = {"metadata": {"labels": {"edgeguard-rbac-probe": "x"}}}
    dry = {"dry_run": "All"}
    denied = [
        (
            f"create Secret in {SCRUBBER_NOT_GRANTED}",
            sa_core.create_namespaced_secret,
            (SCRUBBER_NOT_GRANTED, sec),
            dry,
        ),
        (
            f"patch ConfigMap in {SCRUBBER_NOT_GRANTED}",
            sa_core.patch_namespaced_config_map,
            (probe, SCRUBBER_NOT_GRANTED, patch),
            dry,
        ),
        (
            f"patch Deployment in {SCRUBBER_NOT_GRANTED}",
            sa_apps.patch_namespaced_deployment,
            (probe, SCRUBBER_NOT_GRANTED, patch),
            dry,
        ),
        ("patch ConfigMap in kube-system", sa_core.patch_namespaced_config_map, (probe, "kube-system", patch), dry),
        ("create Secret in kube-system", sa_core.create_namespaced_secret, ("kube-system", sec), dry),
        ("get Secret in kube-system", sa_core.read_namespaced_secret, (probe, "kube-system"), {}),
        (
            "get node-enroll-kubeconfig in openfaas-fn",
            sa_core.read_namespaced_secret,
            ("node-enroll-kubeconfig", "openfaas-fn"),
            {},
        ),
        ("create Secret in openfaas-fn", sa_core.create_namespaced_secret, ("openfaas-fn", sec), dry),
        (f"list Secrets in {GRANTED}", sa_core.list_namespaced_secret, (GRANTED,), {}),
        ("list Secrets in all namespaces", sa_core.list_secret_for_all_namespaces, (), {}),
        (f"delete Secret in {GRANTED}", sa_core.delete_namespaced_secret, (probe, GRANTED), dry),
        (
            f"create ConfigMap in {GRANTED} (no immutable opt-in)",
            sa_core.create_namespaced_config_map,
            (GRANTED, cm),
            dry,
        ),
        (
            f"delete ConfigMap in {GRANTED} (no immutable opt-in)",
            sa_core.delete_namespaced_config_map,
            (probe, GRANTED),
            dry,
        ),
        (
            f"update (PUT) ConfigMap in {GRANTED}",
            sa_core.replace_namespaced_config_map,
            (probe, GRANTED, dict(cm, metadata={"name": probe})),
            dry,
        ),
        (
            f"create Pod in {GRANTED}",
            sa_core.create_namespaced_pod,
            (
                GRANTED,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "rbac-probe"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            ),
            dry,
        ),
        (
            "TokenRequest for node-enroll's ServiceAccount",
            sa_core.create_namespaced_service_account_token,
            (
                "node-enroll",
                "openfaas-fn",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"audiences": []}},
            ),
            dry,
        ),
        (
            f"create RoleBinding in {GRANTED}",
            sa_rbac.create_namespaced_role_binding,
            (
                GRANTED,
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "rbac-probe"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                    "subjects": [
                        {"kind": "ServiceAccount", "name": "configmap-secret-scrubber", "namespace": "openfaas-fn"}
                    ],
                },
            ),
            dry,
        ),
        ("patch Node", sa_core.patch_node, ("sim-node-1", {"spec": {"unschedulable": True}}), dry),
    ]
    allowed = [
        ("list ConfigMaps in all namespaces", sa_core.list_config_map_for_all_namespaces, (), {}),
        (f"patch ConfigMap in {GRANTED}", sa_core.patch_namespaced_config_map, (probe, GRANTED, patch), dry),
        (f"create Secret in {GRANTED}", sa_core.create_namespaced_secret, (GRANTED, sec), dry),
        (f"get Secret in {GRANTED}", sa_core.read_namespaced_secret, (probe, GRANTED), {}),
        (f"patch Deployment in {GRANTED}", sa_apps.patch_namespaced_deployment, (probe, GRANTED, patch), dry),
    ]
    return denied, allowed


def test_every_action_outside_the_scrubbers_role_is_refused_by_the_real_api_server(bootstrapped):
    from kubernetes import client

    c = bootstrapped.cluster
    probe = f"rbac-probe-{uuid.uuid4().hex[:6]}"
    admin_core, admin_apps = c.core(), c.apps()
    for ns in (GRANTED, SCRUBBER_NOT_GRANTED, "kube-system"):  # real targets, so a 403 is not a 404 in disguise
        admin_core.create_namespaced_config_map(
            ns, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": probe}, "data": {"a": "b"}}
        )
        admin_core.create_namespaced_secret(
            ns, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": probe}, "stringData": {"a": "b"}}
        )
        admin_apps.create_namespaced_deployment(ns, deployment(probe, ns=ns, replicas=0))
    try:
        sa = c.api_client(bootstrapped.kubeconfig(FN))
        denied, allowed = rbac_matrix(
            client.CoreV1Api(sa), client.AppsV1Api(sa), client.RbacAuthorizationV1Api(sa), probe
        )
        got = {what: api_status(call, *args, **kw) for what, call, args, kw in denied + allowed}
        assert {w: got[w] for w, *_ in denied} == {w: DENIED for w, *_ in denied}
        assert all(got[w] in (200, 201) for w, *_ in allowed), {w: got[w] for w, *_ in allowed}
    finally:
        for ns in (GRANTED, SCRUBBER_NOT_GRANTED, "kube-system"):
            admin_core.delete_namespaced_config_map(probe, ns)
            admin_core.delete_namespaced_secret(probe, ns)
            admin_apps.delete_namespaced_deployment(probe, ns)
