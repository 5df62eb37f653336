"""Demo scenarios: each module ``local/scenarios/<function>.py`` exposes ``run(ctx)``.

A scenario talks to the functions only through the gateway, as a user with curl
would, and reports with ``ctx.ok``/``ctx.fail``. A function that answers 501 "not
built yet" makes its scenario say so plainly (``NotBuilt``); nothing is faked.
"""

from __future__ import annotations

import json
import sys
import textwrap


class NotBuilt(Exception):
    pass


class ScenarioFailed(Exception):
    pass


class Context:
    def __init__(self, stack, out=None):
        self._stack = stack
        self.gateway = stack.url
        self.out = out or sys.stdout
        self.results: list[tuple[str, str]] = []
        self._kube = None

    # --- what scenarios use --------------------------------------------------------------------
    def token(self, secret_name: str) -> str:
        return self._stack.secret(secret_name)

    @property
    def kube(self):
        """A kubernetes ApiClient for the demo cluster (in-memory emulator or $KUBECONFIG), or None."""
        if self._kube is None:
            self._kube = self._stack.kube_api_client()
        return self._kube

    @property
    def kube_description(self) -> str:
        return self._stack.kube_description

    def call(
        self,
        function: str,
        path: str = "",
        *,
        method: str = "POST",
        body=None,
        token_secret: str | None = None,
        headers: dict | None = None,
        params: dict | None = None,
        timeout: float = 30,
    ):
        """Call a function through the gateway; raises NotBuilt when it answers 501."""
        import requests

        hdrs = dict(headers or {})
        if token_secret:
            hdrs["Authorization"] = f"Bearer {self.token(token_secret)}"
        data = body
        if body is not None and not isinstance(body, (bytes, str)):
            data = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        r = requests.request(
            method, f"{self.gateway}/function/{function}{path}", data=data, headers=hdrs, params=params, timeout=timeout
        )
        if r.status_code == 501:
            raise NotBuilt(f"{function} is not built yet")
        return r

    def drain_async(self, timeout: float = 30) -> bool:
        return self._stack.drain_async(timeout)

    def say(self, text: str) -> None:
        self.out.write(textwrap.indent(text, "  ") + "\n")

    def show(self, title: str, obj) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj, indent=2, ensure_ascii=False, default=str)
        self.out.write(f"  {title}:\n{textwrap.indent(text, '    ')}\n")

    def ok(self, msg: str) -> None:
        self.results.append(("ok", msg))
        self.out.write(f"  \u2714 {msg}\n")

    def fail(self, msg: str) -> None:
        self.results.append(("fail", msg))
        self.out.write(f"  \u2718 {msg}\n")

    def not_built(self, msg: str) -> None:
        raise NotBuilt(msg)
