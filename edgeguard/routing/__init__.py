"""alert-forwarder's routing configuration, shared by the function and the offline ``edgeguard-routes`` CLI.

* ``routes``: the route tree (matchers, ``continue``, default, dedup/throttle), parsed and matched;
* ``destinations``: the ``destinations`` section of the routes document, one spec per destination type;
* ``templates``: webhook body templates;
* ``secret``: the ``alert-forwarder-destinations`` secret and its merge with the declared destinations;
* ``fields``: an alert's values by path, for matchers, templates and dedup keys;
* ``document``: YAML, durations and ``RoutesError`` (every message starts with the exact place);
* ``explain``: where one alert would go (routes, real targets, and why others are not);
* ``cli``: ``edgeguard-routes validate|explain``.

Both the function and the CLI load through here, so they report the same error for the same mistake.
"""

from .destinations import DESTINATION_TYPES, TYPES, DestinationType, parse_destination
from .document import RoutesError, parse_duration
from .explain import explain
from .routes import Route, RouteTable, load_routes_text, parse_routes
from .secret import insecure_url, parse_destination_secrets, resolve_destinations, unknown_secret_entries
from .templates import render_template, validate_template

__all__ = [
    "DESTINATION_TYPES",
    "TYPES",
    "DestinationType",
    "explain",
    "Route",
    "RouteTable",
    "RoutesError",
    "insecure_url",
    "load_routes_text",
    "parse_destination",
    "parse_destination_secrets",
    "parse_duration",
    "parse_routes",
    "render_template",
    "resolve_destinations",
    "unknown_secret_entries",
    "validate_template",
]
