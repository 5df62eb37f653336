"""No secret value bootstrap creates or handles ever reaches its output: plan, run, rerun, revert, failures.

The fake CLIs can be made "leaky": on failure they print every value they hold and the content of every
file they were given, so bootstrap's own error messages (which quote a failing command's stderr) are put
to the test, not only its normal output.
"""

from __future__ import annotations

import base64

from edgeguard_bootstrap import audit_tls, engine, secretstore

# An operator's own, short token, kept from OpenFaaS: short values must be masked too.
SHORT = "Q7x"


def values_seen(node) -> set[str]:
    """Every secret value on the node and in the fake cluster right now."""
    world = node.world()
    found = {base64.b64decode(v).decode() for v in world.get("secrets", {}).values()}
    found |= set(world.get("sa_tokens", {}).values())
    store = node.path(secretstore.STORE)
    if store.is_dir():
        found |= {p.read_text() for p in store.iterdir() if p.is_file()}
    for key in (audit_tls.CA_KEY, audit_tls.KEY):  # the https front's private keys, in every form they take
        path = node.path(key)
        if path.is_file():
            pem = path.read_text()
            found |= {pem, base64.b64encode(pem.encode()).decode()}
            found |= {line for line in pem.splitlines() if line and not line.startswith("-----")}
    return {v.strip() for v in found if v.strip()}


class Recorder:
    def __init__(self, node, capsys):
        self.node, self.capsys = node, capsys
        self.outputs: list[tuple[str, str]] = []
        self.secrets: set[str] = set()

    def run(self, label, *args):
        code, out = self.node.run(*args)
        captured = self.capsys.readouterr()
        self.outputs.append((label, out + captured.out + captured.err))
        self.secrets |= values_seen(self.node)
        return code, out

    def assert_clean(self):
        assert SHORT in self.secrets and len(self.secrets) > 10
        for label, text in self.outputs:
            for value in self.secrets:
                assert value not in text, f"a secret value appears in the output of {label}"


def test_no_secret_value_in_any_output_across_dry_run_run_rerun_errors_and_revert(node, capsys):
    node.update_world(secrets={"node-enroll-admin-token": base64.b64encode(SHORT.encode()).decode()})
    rec = Recorder(node, capsys)
    assert rec.run("dry run", "all", "--dry-run")[0] == 0
    code, out = rec.run("first run", "all", "--yes", "--check-timeout", "5")
    assert code == 0, out
    assert rec.run("rerun", "all", "--yes", "--check-timeout", "5")[0] == 0
    assert rec.run("rotation", "openfaas", "--rotate", "configmap-secret-scrubber-fingerprint-key")[0] == 0

    # Error paths: the OpenFaaS copy of the short token vanished and re-creating it fails; a rotation's
    # update fails; applying RBAC fails. Each failing CLI dumps everything it knows into its stderr.
    w = node.world()
    del w["secrets"]["node-enroll-admin-token"]
    w["leaky_fail"] = ["faas-cli secret create node-enroll-admin-token"]
    node.set_world(w)
    code, out = rec.run("failed create", "openfaas")
    assert code == 2 and "failed with exit status 2" in out and engine.HIDDEN in out, out
    node.update_world(leaky_fail=["faas-cli secret update"])
    code, out = rec.run("failed update", "openfaas", "--rotate", "audit-ingest-token")
    assert code == 2 and "failed" in out, out
    node.update_world(leaky_fail=["kubectl diff"])
    code, out = rec.run("failed diff", "openfaas")
    assert code == 2 and "failed" in out, out
    # kubectl fails on the TLS Secret's manifest and prints the file, the private key's base64 included.
    node.update_world(leaky_fail=["kubectl diff -f " + str(node.path(audit_tls.SECRET_MANIFEST))])
    code, out = rec.run("failed tls secret diff", "k3s-audit", "--skip-check")
    assert code == 2 and "kubectl diff -f" in out and engine.HIDDEN in out, out

    # Revert, failing first (it has loaded no secret from OpenFaaS, only what is on the node), then for real.
    node.update_world(leaky_fail=["faas-cli secret remove"])
    code, out = rec.run("failed revert", "revert", "--yes")
    assert code == 2 and "failed" in out, out
    node.update_world(leaky_fail=[])
    code, out = rec.run("revert", "revert", "--yes")
    assert code == 0, out
    rec.assert_clean()


def test_short_registered_values_are_masked_too(tmp_path):
    import io

    out = io.StringIO()
    ctx = engine.Ctx(str(tmp_path), out=out, env={"PATH": str(tmp_path)})
    ctx.add_secret(b"Q7x\n")
    ctx.add_secret("")  # nothing registered: an empty value would mask everywhere
    ctx.say("token=Q7x; done")
    assert out.getvalue() == f"token={engine.HIDDEN}; done\n"
