"""The generated documents committed under ``openapi/``: the HTTP spec, the event JSON Schemas
and the AsyncAPI description of the topics. CI regenerates them and fails on any drift."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from switchboard.app import Component, create_app
from switchboard.settings import Settings


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_all(settings: Settings, components: Sequence[Component]) -> dict[str, str]:
    app = create_app(settings, components)
    files = {"openapi.json": _dump(app.openapi())}
    for component in components:
        for name, schema in component.schemas.items():
            files[f"schemas/{name}.schema.json"] = _dump(schema)
    return files
