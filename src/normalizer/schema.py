"""``python -m normalizer.schema > openapi/schemas/inbound-event.schema.json``"""

from __future__ import annotations

import json
import sys
from typing import Any

from .models import EVENT_ADAPTER

SCHEMA_ID = "https://switchboard.dev/schemas/inbound-event.v1.schema.json"


def json_schema() -> dict[str, Any]:
    body = EVENT_ADAPTER.json_schema(mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "InboundEvent",
        "description": "Canonical inbound event (CloudEvents 1.0, structured mode): "
        "value of switchboard.inbound.v1. See docs/contracts.md §4.",
        **body,
    }


def render() -> str:
    # Same formatting as switchboard.openapi, so both generators write identical bytes.
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
