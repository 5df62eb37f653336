"""The complete, exact transcript of every command bootstrap runs for `all`, host-mode falco and `revert`.

Together with the per-step tests this asserts every external command invocation, read-only ones
included. Placeholders: {store} (bootstrap's secret store under --root), {root} (--root), {repo}
(--repo), {gw} (--gateway), {probe} (random probe name), {serial} (the certificate's random serial number).
"""

from __future__ import annotations

import re

ALL = [
    "uname -m",
    "uname -r",
    "k3s --version",
    "systemctl is-active k3s",
    "kubectl get --raw /readyz",
    "kubectl get deployments -n openfaas-fn -o json",
    "kubectl get ingressclass traefik -o name",
    "kubectl get --raw /readyz",
    "faas-cli secret list --gateway {gw}",
    "kubectl get secrets -n openfaas-fn -o json",
    "faas-cli secret create audit-ingest-token --from-file={store}/audit-ingest-token --gateway {gw}",
    "faas-cli secret create alert-forwarder-token --from-file={store}/alert-forwarder-token --gateway {gw}",
    "faas-cli secret create configmap-secret-scrubber-token --from-file={store}/configmap-secret-scrubber-token "
    "--gateway {gw}",
    "faas-cli secret create node-enroll-admin-token --from-file={store}/node-enroll-admin-token --gateway {gw}",
    "faas-cli secret create edgeguard-metrics-token --from-file={store}/edgeguard-metrics-token --gateway {gw}",
    "faas-cli secret create node-enroll-key --from-file={store}/node-enroll-key --gateway {gw}",
    "faas-cli secret create configmap-secret-scrubber-fingerprint-key "
    "--from-file={store}/configmap-secret-scrubber-fingerprint-key --gateway {gw}",
    "faas-cli secret create audit-ingest-extra-rules --from-file={store}/audit-ingest-extra-rules --gateway {gw}",
    "faas-cli secret create alert-forwarder-destinations --from-file={store}/alert-forwarder-destinations "
    "--gateway {gw}",
    "kubectl diff -f {repo}/deploy/rbac/configmap-secret-scrubber.yaml",
    "kubectl apply -f {repo}/deploy/rbac/configmap-secret-scrubber.yaml",
    "kubectl diff -f {repo}/deploy/rbac/node-enroll.yaml",
    "kubectl apply -f {repo}/deploy/rbac/node-enroll.yaml",
    "kubectl diff -f {repo}/deploy/rbac/alert-forwarder.yaml",
    "kubectl apply -f {repo}/deploy/rbac/alert-forwarder.yaml",
    "kubectl diff -f {repo}/deploy/rbac/node-tokens-alert-forwarder.yaml",
    "kubectl apply -f {repo}/deploy/rbac/node-tokens-alert-forwarder.yaml",
    "kubectl get --raw /apis/admissionregistration.k8s.io/v1",
    "kubectl get clusterrolebinding,clusterrole edgeguard:configmap-secret-scrubber-immutable -o name "
    "--ignore-not-found",
    "kubectl diff -f {root}/var/lib/edgeguard/manifests/serviceaccount-tokens.yaml",
    "kubectl apply -f {root}/var/lib/edgeguard/manifests/serviceaccount-tokens.yaml",
    "kubectl get secret configmap-secret-scrubber-sa-token -n openfaas-fn -o json",
    "faas-cli secret create configmap-secret-scrubber-kubeconfig "
    "--from-file={store}/configmap-secret-scrubber-kubeconfig --gateway {gw}",
    "kubectl get secret node-enroll-sa-token -n openfaas-fn -o json",
    "faas-cli secret create node-enroll-kubeconfig --from-file={store}/node-enroll-kubeconfig --gateway {gw}",
    "kubectl get secret alert-forwarder-sa-token -n openfaas-fn -o json",
    "faas-cli secret create alert-forwarder-kubeconfig --from-file={store}/alert-forwarder-kubeconfig --gateway {gw}",
    "helm list -n openfaas -o json",
    "kubectl get deployment cron-connector -n openfaas -o name",
    "arkade install cron-connector",
    "k3s --version",
    "kubectl get ingressclass traefik -o name",
    "openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt "
    "-days 3650 -subj /CN=edgeguard audit-ingest CA -addext basicConstraints=critical,CA:TRUE -addext "
    "keyUsage=critical,keyCertSign,cRLSign",
    "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout tls.key -out tls.csr -subj "
    "/CN=audit-ingest.edgeguard.internal",
    "openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -set_serial {serial} -days 825 -extfile ext.cnf -out "
    "tls.crt",
    "kubectl diff -f {root}/var/lib/edgeguard/audit-tls/secret.yaml",
    "kubectl apply -f {root}/var/lib/edgeguard/audit-tls/secret.yaml",
    "kubectl diff -f {root}/var/lib/edgeguard/audit-tls/ingress.yaml",
    "kubectl apply -f {root}/var/lib/edgeguard/audit-tls/ingress.yaml",
    "kubectl get --raw /readyz",
    "kubectl get namespace falco -o name",
    "kubectl create namespace falco",
    "kubectl diff -f {root}/var/lib/edgeguard/manifests/falco-alert-token.yaml",
    "kubectl apply -f {root}/var/lib/edgeguard/manifests/falco-alert-token.yaml",
    "helm repo list -o json",
    "helm repo add falcosecurity https://falcosecurity.github.io/charts",
    "helm list -n falco -o json",
    "helm repo update falcosecurity",
    "helm upgrade --install falco falcosecurity/falco --namespace falco --create-namespace --version 9.1.0 "
    "--values {root}/var/lib/edgeguard/falco-values.yaml --wait --timeout 10m",
    "k3s --version",
    "k3s --version",
    "kubectl get deployments,daemonsets,statefulsets -n openfaas -o json",
    "kubectl get deployments,daemonsets,statefulsets -n openfaas-fn -o json",
    "kubectl get deployments,daemonsets,statefulsets -n falco -o json",
    "systemctl restart k3s",
    "kubectl get --raw /readyz",
    "kubectl get deployments -n openfaas-fn -o json",
    "kubectl create configmap {probe} -n default --from-literal=probe=edgeguard-bootstrap",
    "kubectl delete configmap {probe} -n default --wait=false",
    "k3s ctr -n k8s.io images list",
]

HOST = [
    "uname -m",
    "uname -r",
    "dpkg-query -W -f=${Status} falco",
    "curl -fsSL -o {root}/var/lib/edgeguard/falcosecurity-packages.asc "
    "https://falco.org/repo/falcosecurity-packages.asc",
    "gpg --show-keys --with-colons {root}/var/lib/edgeguard/falcosecurity-packages.asc",
    "gpg --dearmor --yes -o {root}/usr/share/keyrings/falco-archive-keyring.gpg "
    "{root}/var/lib/edgeguard/falcosecurity-packages.asc",
    "apt-get update",
    "apt-get install -y falco",
    "systemctl daemon-reload",
    "systemctl is-enabled falcoctl-artifact-follow.service",
    "systemctl is-enabled falco-kmod.service",
    "systemctl is-enabled falco-modern-bpf.service",
    "systemctl is-active falco-modern-bpf.service",
    "systemctl enable --now falco-modern-bpf.service",
]

REVERT = [
    "systemctl disable --now falco-modern-bpf.service",
    "apt-get remove -y falco",
    "helm list -n falco -o json",
    "helm uninstall falco -n falco",
    "kubectl delete --ignore-not-found -f {root}/var/lib/edgeguard/manifests/falco-alert-token.yaml",
    "kubectl delete --ignore-not-found -f {root}/var/lib/edgeguard/audit-tls/ingress.yaml",
    "kubectl delete --ignore-not-found -f {root}/var/lib/edgeguard/audit-tls/secret.yaml",
    "helm list -n openfaas -o json",
    "helm uninstall cron-connector -n openfaas",
    "faas-cli secret remove alert-forwarder-kubeconfig --gateway {gw}",
    "faas-cli secret remove node-enroll-kubeconfig --gateway {gw}",
    "faas-cli secret remove configmap-secret-scrubber-kubeconfig --gateway {gw}",
    "kubectl delete --ignore-not-found -f {root}/var/lib/edgeguard/manifests/serviceaccount-tokens.yaml",
    "kubectl delete --ignore-not-found -f {repo}/deploy/rbac/node-tokens-alert-forwarder.yaml",
    "kubectl delete --ignore-not-found -f {repo}/deploy/rbac/alert-forwarder.yaml",
    "kubectl delete --ignore-not-found -f {repo}/deploy/rbac/node-enroll.yaml",
    "kubectl delete --ignore-not-found -f {repo}/deploy/rbac/configmap-secret-scrubber.yaml",
    "faas-cli secret remove alert-forwarder-destinations --gateway {gw}",
    "faas-cli secret remove audit-ingest-extra-rules --gateway {gw}",
    "faas-cli secret remove configmap-secret-scrubber-fingerprint-key --gateway {gw}",
    "faas-cli secret remove node-enroll-key --gateway {gw}",
    "faas-cli secret remove edgeguard-metrics-token --gateway {gw}",
    "faas-cli secret remove node-enroll-admin-token --gateway {gw}",
    "faas-cli secret remove configmap-secret-scrubber-token --gateway {gw}",
    "faas-cli secret remove alert-forwarder-token --gateway {gw}",
    "faas-cli secret remove audit-ingest-token --gateway {gw}",
    "systemctl restart k3s",
]


def transcript(node) -> list[str]:
    out = []
    for argv in node.calls():
        s = " ".join(argv).replace(f"{node.root}/var/lib/edgeguard/secrets/", "{store}/")
        s = s.replace(str(node.root), "{root}").replace(str(node.repo), "{repo}")
        s = re.sub(r"-set_serial 0x[0-9a-f]{32}", "-set_serial {serial}", s)
        out.append(re.sub(r"edgeguard-audit-probe-[0-9a-f]{8}", "{probe}", s.replace(node.gateway, "{gw}")))
    return out


def test_every_command_of_all_host_falco_and_revert_in_order(node):
    code, out = node.run("all", "--yes", "--check-timeout", "5", "--cron-connector")
    assert code == 0, out
    assert transcript(node) == ALL
    node.clear_calls()
    code, out = node.run("falco", "--mode", "host")
    assert code == 0, out
    assert transcript(node) == HOST
    node.clear_calls()
    code, out = node.run("revert", "--yes")
    assert code == 0, out
    assert transcript(node) == REVERT
