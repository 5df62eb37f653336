"""Pytest fixtures for the in-process Kubernetes API emulator.

from tests.kubeemu.fixtures import kube_emulator  # noqa: F401  (re-export makes pytest see it)

def test_x(kube_emulator):
    api = kubernetes.client.CoreV1Api(kube_emulator.api_client())
"""

from __future__ import annotations

import pytest

from local.kubeemu import KubeEmulator


@pytest.fixture
def kube_emulator():
    """A fresh, started emulator per test (admin token; lenient auth; no RBAC enforcement)."""
    emu = KubeEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kube_clients(kube_emulator):
    """(emulator, core_v1, apps_v1) with an admin ApiClient closed after the test."""
    import kubernetes

    client = kube_emulator.api_client()
    try:
        yield kube_emulator, kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
    finally:
        client.close()


@pytest.fixture
def kube_emulator_factory():
    """Factory for emulators with options, e.g. ``kube_emulator_factory(rbac=True, strict_auth=True)``;
    every emulator it made is stopped after the test."""
    made = []

    def make(**options):
        emu = KubeEmulator(**options)
        emu.start()
        made.append(emu)
        return emu

    try:
        yield make
    finally:
        for emu in made:
            emu.stop()
