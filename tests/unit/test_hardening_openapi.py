"""Issue 9, D11: the OpenAPI document declares every error answer of every route with the
error shape, and types inputs as strictly as the service checks them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from channels.schemas import ChannelUpdate
from gateway.app import component as gateway_component
from gateway.endpoints import ReplayRequest
from infra.settings import Settings
from outbox.app import component as outbox_component
from outbox.schemas import MessageCreate
from switchboard.app import create_app

ERROR_REF = "#/components/schemas/ErrorResponse"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(_env_file=None)
    app = create_app(settings, [gateway_component(settings), outbox_component(settings)])
    spec: dict[str, Any] = app.openapi()
    return spec


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_every_v1_route_documents_401_403_and_422_with_the_error_shape(
    document: dict[str, Any],
) -> None:
    missing = []
    for method, path, operation in _operations(document):
        if not path.startswith("/v1/"):
            continue
        for status in ("401", "403", "422"):
            answer = operation["responses"].get(status)
            schema = (answer or {}).get("content", {}).get("application/json", {}).get("schema")
            if schema != {"$ref": ERROR_REF}:
                missing.append(f"{method} {path} {status}")
    assert missing == []


def test_routes_with_an_id_document_404_and_errors_are_never_the_validation_default(
    document: dict[str, Any],
) -> None:
    for method, path, operation in _operations(document):
        if "{" in path and path.startswith("/v1/"):
            assert "404" in operation["responses"], f"{method} {path}"
        for status, answer in operation["responses"].items():
            if status.startswith(("4", "5")):
                schemas = [c.get("schema") for c in answer.get("content", {}).values()]
                assert schemas == [{"$ref": ERROR_REF}], f"{method} {path} {status}"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_webhook_routes_document_their_refusals(document: dict[str, Any]) -> None:
    item = document["paths"]["/webhooks/{platform}/{channel_id}"]
    assert {"400", "401", "404", "413", "415", "503"} <= set(item["post"]["responses"])
    assert {"403", "404", "405"} <= set(item["get"]["responses"])
    assert "text/plain" in item["get"]["responses"]["200"]["content"]


def test_inputs_are_typed_as_strictly_as_they_are_checked(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["MessageCreate"]["properties"]["channel_id"]["format"] == "uuid"
    with pytest.raises(ValidationError):
        ReplayRequest.model_validate({"until": 0})
    with pytest.raises(ValidationError):
        ReplayRequest.model_validate({"limit": "10"})
    with pytest.raises(ValidationError):
        ChannelUpdate.model_validate({"enabled": 0})
    with pytest.raises(ValidationError):
        MessageCreate.model_validate(
            {"channel_id": "0", "to": "1", "content": {"kind": "text", "text": "hi"}}
        )
