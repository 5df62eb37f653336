"""Timestamps in the apiserver's RFC 3339 form (second precision, UTC 'Z')."""

from __future__ import annotations

import datetime


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
