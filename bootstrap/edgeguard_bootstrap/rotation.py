"""Waiting, after `faas-cli secret update`, until a function takes the new value of its token.

The kubelet updates a function's mounted secret a minute or so after the update, and a caller given the new
token before that is refused. Falco drops refused alerts (its http_output ignores status codes) and the API
server gives up on a refused audit batch after its retries, so every caller that caches a token gets the new
one only once the function answers 200 to it. The function keeps taking the previous value for its
token_grace_seconds (600 s by default), so the callers still on the old one lose nothing meanwhile.
"""

from __future__ import annotations

import time

from . import facts
from .engine import BootstrapError, Ctx

GRACE_SECONDS = 600
POLL = 2.0  # seconds between probes while the function's mounted secret catches up


def wait_accepted(
    ctx: Ctx, gateway: str, function: str, token: str, timeout: float, *, then: str, if_refused: str
) -> None:
    """Return once GET <gateway>/function/<function> with ``token`` answers 200; ``then`` is what follows,
    ``if_refused`` what the operator should do when it never does."""
    url = gateway.rstrip("/") + f"/function/{function}"
    if ctx.dry_run:
        ctx.say(f"  [plan] wait until {url} accepts the new token (GET with it answers 200), then {then}")
        return
    deployed = facts.deployed_functions(ctx)
    if deployed is not None and function not in deployed:
        ctx.note(f"{function} is not deployed, so nobody holds the old token: {then} now")
        return
    deadline = time.monotonic() + timeout
    while True:
        status, _ = ctx.http_get(url, {"Authorization": f"Bearer {token}"}, timeout=10)
        if status == 200:
            ctx.say(
                f"  {function} accepts the new token; it still takes the previous one for its "
                f"token_grace_seconds ({GRACE_SECONDS} s by default)"
            )
            return
        if time.monotonic() > deadline:
            raise BootstrapError(
                f"{function} still refuses the new {function}-token after {int(timeout)}s (HTTP {status}: its "
                f"mounted secret is not updated yet?). {if_refused}"
            )
        time.sleep(POLL)
