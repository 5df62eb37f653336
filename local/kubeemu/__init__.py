"""In-process Kubernetes API emulator (kmock based) that the real `kubernetes` client talks to over HTTP.

    from local.kubeemu import KubeEmulator
    with KubeEmulator() as emu:
        api = kubernetes.client.CoreV1Api(emu.api_client())

See docs/kubeemu.md for what is emulated and what is not.
"""

from .emulator import ADMIN_TOKEN, Fault, KubeEmulator, User
from .errors import ApiError
from .resources import Resource

__all__ = ["ADMIN_TOKEN", "ApiError", "Fault", "KubeEmulator", "Resource", "User"]
