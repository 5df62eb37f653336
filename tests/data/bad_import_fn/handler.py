import edgeguard  # noqa: F401  - wrong inside an image: only function.edgeguard exists


def handle(event, context):
    return {"statusCode": 200, "body": "unreachable"}
