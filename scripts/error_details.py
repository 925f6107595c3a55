"""Decode the error details that `buf curl` prints base64-encoded.

    buf curl ... 2>&1 | .venv/bin/python scripts/error_details.py

A failed call makes `buf curl` print the status as JSON on stderr, with each
google.rpc detail (BadRequest, ErrorInfo, ResourceInfo) as base64 protobuf:
`{"type": "google.rpc.BadRequest", "value": "CkYK..."}`. This prints the code and
message, then each detail as JSON. Anything that is not such an error passes through.
"""

from __future__ import annotations

import base64
import json
import sys

from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2  # noqa: F401 - registers the google.rpc detail types


def decode(detail: dict[str, str]) -> str:
    value = detail.get("value", "")
    payload = base64.b64decode(value + "=" * (-len(value) % 4))  # buf curl leaves the padding off
    try:
        cls = message_factory.GetMessageClass(descriptor_pool.Default().FindMessageTypeByName(detail["type"]))
    except KeyError:
        return f"{detail.get('type')}: {len(payload)} bytes of a type this script does not know"
    return f"{detail['type']} {json_format.MessageToJson(cls.FromString(payload), indent=None)}"


def main() -> int:
    text = sys.stdin.read()
    start = text.find("{")
    try:
        error = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        error = None
    if not isinstance(error, dict) or "code" not in error:
        sys.stdout.write(text)
        return 0
    print(f"{error['code']}: {error.get('message', '')}")
    for detail in error.get("details", []):
        print(decode(detail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
