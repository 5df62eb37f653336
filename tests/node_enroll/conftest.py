"""Fixtures for node-enroll: the function loaded from its build context with captured logs."""

from __future__ import annotations

import io

import pytest
import yaml

from tests.kubeemu.fixtures import kube_emulator  # noqa: F401  (re-exported so pytest sees it)
from tests.node_enroll.helpers import ADMIN, BASE_ENV, KEY, seed_records_namespace, sub


@pytest.fixture
def enroll_fn(load_function):
    """Factory: node-enroll loaded with test env/secrets, its log captured in ``fn.log_buffer``."""

    def load(env=None, secrets=None):
        all_secrets = {"node-enroll-key": KEY + "\n", "node-enroll-admin-token": ADMIN + "\n"}
        all_secrets.update(secrets or {})
        all_secrets = {k: v for k, v in all_secrets.items() if v is not None}
        fn = load_function("node-enroll", env={**BASE_ENV, **(env or {})}, secrets=all_secrets)
        fn.log_buffer = io.StringIO()
        sub(fn, "edgeguard.log")._stream = fn.log_buffer
        return fn

    return load


@pytest.fixture
def kenroll(enroll_fn, kube_emulator):  # noqa: F811 - pytest passes the fixture imported above by this name
    """Factory: node-enroll wired to the emulator through its kubeconfig secret; returns (fn, emulator)."""

    def load(env=None, secrets=None, kubeconfig=None):
        kc = kubeconfig or yaml.safe_dump(kube_emulator.kubeconfig_dict())
        seed_records_namespace(kube_emulator)
        fn = enroll_fn(env=env, secrets={"node-enroll-kubeconfig": kc, **(secrets or {})})
        return fn, kube_emulator

    return load
