from tests.kubeemu.fixtures import kube_clients, kube_emulator  # noqa: F401
