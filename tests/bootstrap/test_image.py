"""--image: prepare an SD-card image under --root without running anything on this machine."""

from __future__ import annotations

import yaml

from edgeguard_bootstrap import audit_tls, falco, k3s_audit


def test_image_mode_writes_files_runs_nothing_and_lists_first_boot_commands(node):
    node.seed_tokens()
    code, out = node.run("k3s-audit", "--image")
    assert code == 0, out
    code, out2 = node.run(
        "falco", "--image", "--mode", "host", "--driver", "kmod", "--falco-gateway", "http://10.0.0.1:31112"
    )
    assert code == 0, out2
    # Not even read-only queries: they would describe the wrong machine. Only openssl ran, making the
    # webhook's CA and certificate into the image (in a private temporary directory).
    assert [c[:3] for c in node.calls()] == [
        ["openssl", "req", "-x509"],
        ["openssl", "req", "-new"],
        ["openssl", "x509", "-req"],
    ]
    assert all(not r["cwd"].startswith(str(node.root)) for r in node.call_records())
    assert node.path(k3s_audit.DROPIN).exists() and node.path(k3s_audit.WEBHOOK).exists()
    assert node.path(audit_tls.CERT).exists() and node.path(audit_tls.KEY).stat().st_mode & 0o777 == 0o600
    first_boot_audit = out.split("run these on the node at first boot", 1)[1]
    assert [line.strip() for line in first_boot_audit.splitlines()[1:] if line.strip() and "change" not in line] == [
        f"kubectl apply -f {audit_tls.SECRET_MANIFEST}",
        f"kubectl apply -f {audit_tls.INGRESS_MANIFEST}",
    ]
    url = yaml.safe_load(node.path(falco.DROPIN).read_text())["http_output"]["url"]
    assert url.startswith("http://falco:") and url.endswith("@10.0.0.1:31112/function/alert-forwarder")
    assert node.path(falco.APT_SOURCE).exists()
    first_boot = out2.split("run these on the node at first boot", 1)[1]
    steps = [line.strip() for line in first_boot.splitlines()[1:] if line.strip() and "change" not in line]
    assert steps == [
        'DEBIAN_FRONTEND=noninteractive apt-get install -y dkms make "linux-headers-$(uname -r)"',
        f"curl -fsSL -o {falco.KEY_DOWNLOAD} {falco.KEY_URL}",
        f"gpg --show-keys --with-colons {falco.KEY_DOWNLOAD}   # continue only if the fingerprint is "
        f"{falco.KEY_FINGERPRINT}",
        f"gpg --dearmor --yes -o {falco.KEYRING} {falco.KEY_DOWNLOAD}",
        "apt-get update",
        "DEBIAN_FRONTEND=noninteractive FALCO_FRONTEND=noninteractive FALCO_DRIVER_CHOICE=kmod FALCOCTL_ENABLED=no "
        "apt-get install -y falco",
        "systemctl enable --now falco-kmod.service",
    ]
    assert str(node.root) not in first_boot  # paths as they will be on the node
    # Idempotent: the second run writes nothing and makes no new key.
    code, again = node.run(
        "falco", "--image", "--mode", "host", "--driver", "kmod", "--falco-gateway", "http://10.0.0.1:31112"
    )
    assert "\nno changes" in again
    node.clear_calls()
    code, again = node.run("k3s-audit", "--image")
    assert code == 0 and node.calls() == [] and "] create" not in again and "] update" not in again


def test_image_mode_needs_a_driver_and_refuses_cluster_steps(node):
    node.seed_tokens()
    code, out = node.run("falco", "--image", "--mode", "host")
    assert code == 2 and "--image needs --driver" in out
    code, out = node.run("openfaas", "--image")
    assert code == 2 and "needs the live node or cluster" in out
    assert node.calls() == []
