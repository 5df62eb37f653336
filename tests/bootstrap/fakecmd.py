"""One recording fake for every host command bootstrap runs.

Each fake executable on the test PATH runs this with its own name. Every call
is appended to $FAKE_LOG (argv, the env vars bootstrap sets, cwd); the reply
comes from a small simulated node/cluster kept in $FAKE_WORLD (JSON), so a
second bootstrap run sees what the first one did.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys

# The calling command's environment, cwd and executable: os.environ, os.getcwd() and sys.argv[0] when this
# runs as a fake executable; given by tests/bootstrap/inproc.py when it runs in the test's process.
ENV = os.environ
CWD = None
SELF = None
INPROCESS = False

WATCHED_ENV = (
    "DEBIAN_FRONTEND",
    "FALCO_FRONTEND",
    "FALCO_DRIVER_CHOICE",
    "FALCOCTL_ENABLED",
    "OPENFAAS_URL",
    "KUBECONFIG",
)


def load():
    with open(ENV["FAKE_WORLD"]) as f:
        return json.load(f)


def save(world):
    tmp = ENV["FAKE_WORLD"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(world, f)
    os.replace(tmp, ENV["FAKE_WORLD"])


def out(text="", rc=0, err=""):
    if text:
        sys.stdout.write(text)
    if err:
        sys.stderr.write(err)
    sys.exit(rc)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main(argv=None, env=None, cwd=None, inprocess=False):
    global ENV, CWD, SELF, INPROCESS
    argv = sys.argv if argv is None else argv
    ENV, CWD, SELF, INPROCESS = (os.environ if env is None else env), (cwd or os.getcwd()), argv[0], inprocess
    tool = os.path.basename(argv[0])
    args = argv[1:]
    with open(ENV["FAKE_LOG"], "a") as log:
        log.write(
            json.dumps({"argv": [tool, *args], "cwd": CWD, "env": {k: ENV[k] for k in WATCHED_ENV if k in ENV}}) + "\n"
        )
    world = load()
    for prefix in world.get("leaky_fail", []):
        # A worst-case CLI: it fails and dumps every value it can see (secrets it holds, files it was given).
        if " ".join([tool, *args]).startswith(prefix):
            out(rc=2, err="failed; it knew: " + " | ".join(known_values(world, args)) + "\n")
    override = world.get("fail", {}).get(" ".join([tool, *args]))
    if override is not None:
        out(override.get("stdout", ""), override.get("rc", 1), override.get("stderr", "forced failure\n"))
    handler = globals().get("do_" + tool.replace("-", "_"))
    if handler is None:
        out(rc=127, err=f"{tool}: no fake\n")
    handler(world, args)
    out()


def known_values(world, args):
    values = [base64.b64decode(v).decode("utf-8", "replace") for v in world.get("secrets", {}).values()]
    values += list(world.get("sa_tokens", {}).values())
    files = [a.split("=", 1)[1] for a in args if a.startswith("--from-file=")]
    files += [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-f"]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                values.append(f.read())
        except OSError:
            pass
    return values


def do_uname(world, args):
    out(world["uname"][args[0]] + "\n")


def do_k3s(world, args):
    if args == ["--version"] and world.get("k3s_version"):
        out(world["k3s_version"] + "\n")
    if args == ["ctr", "-n", "k8s.io", "images", "list"] and world.get("k3s_version"):
        # As containerd's ctr prints it: REF TYPE DIGEST SIZE PLATFORMS LABELS.
        rows = ["REF TYPE DIGEST SIZE PLATFORMS LABELS"]
        for ref, pinned in sorted(world.get("images", {}).items()):
            labels = "io.cri-containerd.image=managed" + (",io.cri-containerd.pinned=pinned" if pinned else "")
            rows.append(f"{ref} application/vnd.oci.image.index.v1+json sha256:{'0' * 64} 20.1MiB linux/arm64 {labels}")
        out("\n".join(rows) + "\n")
    out(rc=127, err="k3s: not installed\n")


def k3s_pulls_preimport_list(world):
    """What k3s does at start with a .txt list in agent/images: pulls each image and pins it."""
    path = world.get("preimport_file")
    if world.get("registry_reachable", True) and path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                ref = line.strip()
                if ref and not ref.startswith("#"):
                    world.setdefault("images", {})[ref] = True


def do_systemctl(world, args):
    verb, unit = args[0], args[-1]
    active = world.setdefault("active", {})
    enabled = world.setdefault("enabled", {})
    if verb == "is-active":
        out(("active" if active.get(unit) else "inactive") + "\n", 0 if active.get(unit) else 3)
    if verb == "is-enabled":
        out(("enabled" if enabled.get(unit) else "disabled") + "\n", 0 if enabled.get(unit) else 1)
    if unit.startswith("falco-") and (verb == "restart" or verb == "enable" and "--now" in args):
        falco_starts(world, host_falco_token(world))
    if verb == "enable" and "--now" in args:
        enabled[unit] = active[unit] = True
    elif verb == "disable" and "--now" in args:
        enabled[unit] = active[unit] = False
    elif verb == "daemon-reload":
        world["daemon_reloads"] = world.get("daemon_reloads", 0) + 1
    elif verb == "restart":
        world.setdefault("restarts", {})[unit] = world.get("restarts", {}).get(unit, 0) + 1
        if unit == "k3s" and world.get("audit_on_restart"):
            world["audit_enabled"] = True
        if unit == "k3s":
            k3s_pulls_preimport_list(world)
        if unit == "k3s" and "ingest" in world:
            # the API server comes back with the token k3s-audit wrote: would audit-ingest take its batches?
            token = base64.b64decode(world["secrets"].get("audit-ingest-token", "")).decode()
            taken = {
                base64.b64decode(v).decode()
                for v in (world["ingest"].get("seen"), world["ingest"].get("previous"))
                if v
            }
            world.setdefault("k3s_starts", []).append("accepted" if token in taken else "refused")
    else:
        out(rc=2, err=f"systemctl fake: unexpected {args}\n")
    save(world)


def forwarder_accepts(world):
    """The tokens the fake alert-forwarder takes now: the secret value its mount shows, and within the
    rotation grace the one before (the gateway fake moves them, conftest._Gateway)."""
    fwd = world.get("fwd", {})
    return {base64.b64decode(v).decode() for v in (fwd.get("seen"), fwd.get("previous")) if v}


def host_falco_token(world):
    from urllib.parse import unquote

    path = world.get("falco_env_file")
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("EDGEGUARD_ALERT_TOKEN="):
                    return unquote(line.split("=", 1)[1].strip())
    except (OSError, TypeError):
        pass
    return None


def falco_starts(world, token):
    """Falco (re)starts with this token: would alert-forwarder take its alerts? (Falco drops refused ones.)"""
    if "fwd" in world:
        world.setdefault("falco_starts", []).append(
            "accepted" if token is not None and token in forwarder_accepts(world) else "refused"
        )


def do_kubectl(world, args):
    if args[:3] == ["rollout", "restart", "daemonset/falco"]:
        falco_starts(world, world.get("falco_secret_token"))
        save(world)
        out("daemonset.apps/falco restarted\n")
    if args[:3] == ["rollout", "status", "daemonset/falco"]:
        out('daemon set "falco" successfully rolled out\n')
    if args[:2] == ["create", "namespace"]:
        world.setdefault("namespaces", []).append(args[2])
        save(world)
        out(f"namespace/{args[2]} created\n")
    if args == ["get", "--raw", "/readyz"]:
        if world.get("api_ready", True):
            out("ok")
        out(rc=1, err="The connection to the server 127.0.0.1:6443 was refused\n")
    if args[:2] == ["get", "deployments,daemonsets,statefulsets"] and args[2] == "-n" and args[4:] == ["-o", "json"]:
        out(json.dumps({"items": workloads(world, args[3])}))
    if args == ["get", "--raw", "/apis/admissionregistration.k8s.io/v1"]:
        resources = [{"name": "mutatingwebhookconfigurations"}, {"name": "validatingwebhookconfigurations"}]
        if world.get("vap"):
            resources += [{"name": "validatingadmissionpolicies"}, {"name": "validatingadmissionpolicybindings"}]
        out(
            json.dumps(
                {"kind": "APIResourceList", "groupVersion": "admissionregistration.k8s.io/v1", "resources": resources}
            )
        )
    if args[:2] == ["get", "validatingadmissionpolicy"] and args[3:] == ["-o", "name"]:
        if any(p.endswith("deploy/admission/node-enroll.yaml") for p in world.get("applied", {})):
            out(f"validatingadmissionpolicy.admissionregistration.k8s.io/{args[2]}\n")
        out(rc=1, err=f'Error from server (NotFound): validatingadmissionpolicies "{args[2]}" not found\n')
    if args == ["get", "nodes", "-o", "json"]:
        out(
            json.dumps(
                {
                    "items": [
                        {
                            "metadata": {"name": "pi-01"},
                            "status": {"allocatable": {"memory": world.get("allocatable", "3884Mi")}},
                        }
                    ]
                }
            )
        )
    if args == ["get", "pods", "-A", "-o", "json"]:
        out(json.dumps({"items": world.get("pods", [])}))
    if args == ["get", "deployments", "-n", "openfaas-fn", "-o", "json"]:
        out(json.dumps({"items": [{"metadata": {"name": n}} for n in world.get("deployments", [])]}))
    if args == ["get", "secrets", "-n", "openfaas-fn", "-o", "json"]:
        items = [{"metadata": {"name": n}, "data": {n: v}} for n, v in world.get("secrets", {}).items()]
        out(json.dumps({"items": items}))
    if args[:2] == ["get", "secret"] and args[3:] == ["-n", "openfaas-fn", "-o", "json"]:
        token = world.get("sa_tokens", {}).get(args[2])
        if token:
            out(json.dumps({"data": {"token": b64(token.encode()), "ca.crt": b64(b"-----BEGIN CERTIFICATE-----\n")}}))
        out(rc=1, err=f'Error from server (NotFound): secrets "{args[2]}" not found\n')
    if args[:2] in (["diff", "-f"], ["apply", "-f"]):
        path = args[2]
        if not os.path.exists(path):
            out(rc=2, err=f'error: the path "{path}" does not exist\n')
        applied = world.setdefault("applied", {})
        import yaml  # lazily: most fake calls do not need it, and each call is a fresh process

        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        namespaces = world.setdefault("namespaces", [])
        # Like the API server: an object in a missing namespace is refused (diff: exit 2, as kubectl's
        # errors are; apply: objects before it in the file are kept, a Namespace earlier in it counts).
        for doc in docs:
            if doc.get("kind") == "Namespace" and args[0] == "apply" and doc["metadata"]["name"] not in namespaces:
                namespaces.append(doc["metadata"]["name"])
            ns = doc.get("metadata", {}).get("namespace")
            if ns and ns not in namespaces:
                if args[0] == "apply":
                    save(world)
                out(
                    rc=2 if args[0] == "diff" else 1, err=f'Error from server (NotFound): namespaces "{ns}" not found\n'
                )
        if args[0] == "diff":
            if applied.get(path) == sha(path):
                out()
            out(f"diff -u -N /tmp/LIVE/{os.path.basename(path)} /tmp/MERGED/{os.path.basename(path)}\n+ (new)\n", 1)
        applied[path] = sha(path)
        for doc in docs:
            if doc.get("kind") == "Secret" and doc["metadata"]["name"] == "edgeguard-alert-token":
                from urllib.parse import unquote

                world["falco_secret_token"] = unquote(base64.b64decode(doc["data"]["token"]).decode())
            if doc.get("kind") == "ServiceAccount":
                world.setdefault("service_accounts", []).append(doc["metadata"]["name"])
            if doc.get("type") == "kubernetes.io/service-account-token":
                sa = doc["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                if sa in world.get("service_accounts", []):
                    world.setdefault("sa_tokens", {})[doc["metadata"]["name"]] = f"eyJfake-{sa}-token-value"
        save(world)
        out("configured\n")
    if args[:2] == ["get", "namespace"] and args[3:] == ["-o", "name"]:
        if args[2] in world.get("namespaces", []):
            out(f"namespace/{args[2]}\n")
        out(rc=1, err=f'Error from server (NotFound): namespaces "{args[2]}" not found\n')
    if args[:2] == ["get", "clusterrolebinding,clusterrole"] and args[3:] == ["-o", "name", "--ignore-not-found"]:
        # Real kubectl prints bindings first, in the order of the kinds asked for.
        found = [
            f"{kind}.rbac.authorization.k8s.io/{args[2]}"
            for kind in ("clusterrolebinding", "clusterrole")
            if f"{kind}/{args[2]}" in world.get("cluster_objects", [])
        ]
        out("".join(line + "\n" for line in found))
    if args[:2] == ["delete", "clusterrolebinding,clusterrole"] and args[3:] == ["--ignore-not-found"]:
        objects = world.setdefault("cluster_objects", [])
        for kind in ("clusterrolebinding", "clusterrole"):
            if f"{kind}/{args[2]}" in objects:
                objects.remove(f"{kind}/{args[2]}")
                sys.stdout.write(f'{kind}.rbac.authorization.k8s.io "{args[2]}" deleted\n')
        save(world)
        out()
    if args[:3] == ["delete", "--ignore-not-found", "-f"]:
        world.setdefault("applied", {}).pop(args[3], None)
        save(world)
        out("deleted\n")
    if args == ["get", "deployment", "cron-connector", "-n", "openfaas", "-o", "name"]:
        if world.get("cron_connector"):
            out("deployment.apps/cron-connector\n")
        out(rc=1, err='Error from server (NotFound): deployments.apps "cron-connector" not found\n')
    if args[:2] == ["get", "ingressclass"] and args[3:] == ["-o", "name"]:
        if args[2] in world.get("ingress_classes", []):
            out(f"ingressclass.networking.k8s.io/{args[2]}\n")
        out(rc=1, err=f'Error from server (NotFound): ingressclasses.networking.k8s.io "{args[2]}" not found\n')
    if args[:2] == ["create", "configmap"]:
        if world.get("audit_enabled"):
            # The batch with the probe's event, as audit-ingest counts it: with the kubeconfig's token (https),
            # without any (an http:// webhook URL), or with a token it does not accept.
            world["audit_events"] = world.get("audit_events", 0) + 1
            counter = {"token": "authenticated_batches", "none": "unauthenticated", "wrong": "invalid_token"}[
                world.get("audit_auth", "token")
            ]
            world[counter] = world.get(counter, 0) + 1
            save(world)
        out(f"configmap/{args[2]} created\n")
    if args[:2] == ["delete", "configmap"]:
        out(f'configmap "{args[2]}" deleted\n')
    out(rc=2, err=f"kubectl fake: unexpected {args}\n")


def do_helm(world, args):
    releases = world.setdefault("releases", {})
    if args == ["repo", "list", "-o", "json"]:
        out(json.dumps([{"name": n, "url": u} for n, u in world.get("repos", {}).items()]))
    if args[:2] == ["repo", "add"]:
        world.setdefault("repos", {})[args[2]] = args[3]
    elif args[:2] == ["repo", "update"]:
        pass
    elif args[0] == "list":
        ns = args[args.index("-n") + 1]
        out(json.dumps([dict(r, name=n) for n, r in releases.items() if r["namespace"] == ns]))
    elif args[:2] == ["get", "values"]:
        rel = releases.get(args[2])
        if not rel:
            out(rc=1, err="Error: release: not found\n")
        out(json.dumps(rel["values"]))
    elif args[:2] == ["upgrade", "--install"]:
        import yaml

        with open(args[args.index("--values") + 1]) as f:
            values = yaml.safe_load(f)
        releases[args[2]] = {
            "namespace": args[args.index("--namespace") + 1],
            "status": "deployed",
            "chart": f"falco-{args[args.index('--version') + 1]}",
            "values": values,
        }
    elif args[0] == "upgrade":
        import yaml

        rel = releases.get(args[1])
        if not rel:
            out(rc=1, err=f'Error: UPGRADE FAILED: "{args[1]}" has no deployed releases\n')
        with open(args[args.index("--values") + 1]) as f:
            values = yaml.safe_load(f)
        merged = deep_merge(rel["values"], values) if "--reuse-values" in args else values
        rel.setdefault("history", {})[rel.get("revision", "1")] = rel["values"]
        rel.update(
            values=merged,
            chart=f"{args[2].split('/')[1]}-{args[args.index('--version') + 1]}",
            revision=str(int(rel.get("revision", "1")) + 1),
        )
    elif args[0] == "rollback":
        rel = releases[args[1]]
        rel["values"] = rel.get("history", {})[args[2]]
        rel["revision"] = str(int(rel.get("revision", "1")) + 1)
    elif args[0] == "uninstall":
        releases.pop(args[1], None)
        if args[1] == "cron-connector":
            world["cron_connector"] = False
    else:
        out(rc=2, err=f"helm fake: unexpected {args}\n")
    save(world)


def deep_merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for k, v in over.items():
            merged[k] = deep_merge(base.get(k), v)
        return merged
    return over


def workloads(world, ns):
    """Deployments/DaemonSets as the API lists them; by default the four functions (faas-netes: Always)."""
    if ns in world.get("workloads", {}):
        return world["workloads"][ns]
    if ns != "openfaas-fn":
        return []
    return [
        {
            "kind": "Deployment",
            "metadata": {"name": n, "namespace": ns},
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": n, "image": f"ghcr.io/edgeguard/{n}:0.1.0", "imagePullPolicy": "Always"}
                        ]
                    }
                }
            },
        }
        for n in world.get("deployments", [])
    ]


def do_faas_cli(world, args):
    secrets = world.setdefault("secrets", {})
    if args[:2] == ["secret", "list"]:
        if world.get("faas_login", True):
            out("NAME\n")
        out(rc=1, err='unauthorized access, run "faas-cli login"\n')
    if args[:2] in (["secret", "create"], ["secret", "update"]):
        name = args[2]
        path = args[3].split("=", 1)[1]
        if (os.stat(path).st_mode & 0o777) != 0o600:
            out(rc=3, err=f"fake: {path} is not 0600\n")
        if args[1] == "create" and name in secrets:
            out(rc=1, err="secret exists\n")
        with open(path, "rb") as f:
            secrets[name] = b64(f.read())
        if name == "alert-forwarder-token" and "fwd" in world and not world["fwd"].get("seen"):
            world["fwd"]["seen"] = secrets[name]  # a new function mounts the value it is deployed with
    elif args[:2] == ["secret", "remove"]:
        secrets.pop(args[2], None)
    elif args[0] == "up":
        world["deployments"] = ["audit-ingest", "alert-forwarder", "configmap-secret-scrubber", "node-enroll"]
    else:
        out(rc=2, err=f"faas-cli fake: unexpected {args}\n")
    save(world)


def do_dpkg_query(world, args):
    if world.get("dpkg", {}).get(args[-1]):
        out("install ok installed")
    out(rc=1, err=f"dpkg-query: no packages found matching {args[-1]}\n")


def do_apt_get(world, args):
    if args[:2] == ["install", "-y"] and "falco" in args[2] or args[2:] == ["falco"]:
        world.setdefault("dpkg", {})["falco"] = True
    elif args[:2] == ["remove", "-y"]:
        world.setdefault("dpkg", {})[args[2]] = False
    save(world)


def do_curl(world, args):
    with open(args[args.index("-o") + 1], "w") as f:
        f.write("-----BEGIN PGP PUBLIC KEY BLOCK-----\nfake\n-----END PGP PUBLIC KEY BLOCK-----\n")


def do_gpg(world, args):
    if args[:2] == ["--show-keys", "--with-colons"]:
        out(
            f"pub:-:4096:1:4365106822B35B1B:1700000000:::-:::scESC::::::23::0:\n"
            f"fpr:::::::::{world.get('key_fpr', '478B2FBBC75F4237B731DA4365106822B35B1B1F')}:\n"
        )
    if args[0] == "--dearmor":
        with open(args[args.index("-o") + 1], "wb") as f:
            f.write(b"\x99\x02fake-keyring")
        out()
    out(rc=2, err=f"gpg fake: unexpected {args}\n")


def do_openssl(world, args):
    # The real openssl, recorded like every other call: bootstrap's keys and certificates are real ones.
    real = ENV.get("FAKE_REAL_OPENSSL")
    if not real:
        out(rc=127, err="openssl: not installed on the machine running the tests\n")
    if INPROCESS:
        import subprocess

        proc = subprocess.run(
            [real, *args], capture_output=True, text=True, cwd=CWD, env=dict(ENV), stdin=subprocess.DEVNULL
        )
        out(proc.stdout, proc.returncode, proc.stderr)
    os.execv(real, [real, *args])


def do_arkade(world, args):
    if args[0] == "get":
        # Like arkade: download the tool into ~/.arkade/bin (here: a copy of this fake).
        dest = os.path.join(ENV["HOME"], ".arkade", "bin")
        os.makedirs(dest, exist_ok=True)
        with open(SELF) as f:
            script = f.read()
        with open(os.path.join(dest, args[1]), "w") as f:
            f.write(script)
        os.chmod(os.path.join(dest, args[1]), 0o755)
        out()
    if args == ["install", "cron-connector"]:
        # arkade installs apps as Helm releases.
        world["cron_connector"] = True
        world.setdefault("releases", {})["cron-connector"] = {
            "namespace": "openfaas",
            "status": "deployed",
            "chart": "cron-connector-0.6.0",
            "values": {},
        }
        save(world)
        out()
    out(rc=2, err=f"arkade fake: unexpected {args}\n")


if __name__ == "__main__":
    main()
