"""node-enroll: not built yet (see its issue)."""
from .edgeguard import http


@http.guarded
def handle(event, context):
    raise http.HTTPError(501, "node-enroll is not built yet")
