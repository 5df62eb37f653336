from tests.kubeemu.fixtures import kube_clients, kube_emulator, kube_emulator_factory  # noqa: F401  (re-export)
