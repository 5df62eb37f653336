"""A probe function: each path returns one of the shapes the python3-http contract maps."""
import json
import time


def handle(event, context):
    p = event.path
    if p == "/none":
        return None
    if p == "/dict-body":
        return {"statusCode": 201, "body": {"a": 1}}
    if p == "/no-status":
        return {"body": "plain"}
    if p == "/no-body":
        return {"statusCode": 204}
    if p == "/list-body":
        return {"statusCode": 200, "body": [1, "a", None]}
    if p == "/str-status":
        return {"statusCode": "202", "body": "x"}
    if p == "/list-headers":
        return {"statusCode": 200, "body": "h", "headers": [("X-A", "1"), ("X-A", "2")]}
    if p == "/content-type":
        return {"statusCode": 200, "body": "{}", "headers": {"Content-Type": "application/json"}}
    if p == "/raise":
        raise RuntimeError("boom")
    if p == "/sleep":
        time.sleep(float(event.query.get("s", "2")))
        return {"statusCode": 200, "body": "slept"}
    if p == "/headers":
        return {"statusCode": 200, "body": {"headers": dict(event.headers.items())}}
    if p == "/context":
        return {"statusCode": 200, "body": {"hostname": context.hostname}}
    return {"statusCode": 200, "body": {
        "method": event.method, "path": event.path, "query": event.query.getlist("q"),
        "body": event.body.decode(), "body_type": type(event.body).__name__,
        "header": event.headers.get("x-probe"), "call_id": event.headers.get("X-Call-Id"),
        "ua": event.headers.get("User-Agent"),
    }}
