"""Template placeholders and the parameter check (``outbox.templates``), pure."""

from __future__ import annotations

from typing import Any

import pytest

from outbox.templates import Placeholders, parameter_problems, placeholders


def _body(text: str) -> dict[str, Any]:
    return {"type": "BODY", "text": text}


def test_positional_and_named_placeholders_are_counted_once_each() -> None:
    found = placeholders(
        [
            {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
            _body("Hi {{1}}, {{2}} and again {{1}}"),
            {"type": "FOOTER", "text": "{{9}} is not a parameter here"},
            {"type": "BUTTONS", "buttons": []},
        ]
    )
    assert found == {"header": Placeholders(1, frozenset()), "body": Placeholders(2, frozenset())}
    assert placeholders([_body("Hi {{ first_name }}")]) == {
        "body": Placeholders(1, frozenset({"first_name"}))
    }
    assert placeholders([{"type": "HEADER", "format": "IMAGE"}, _body("plain")]) == {
        "header": Placeholders(1, frozenset())
    }
    assert placeholders(["junk", {"type": "BODY"}]) == {}


@pytest.mark.parametrize(
    ("given", "problems"),
    [
        ([{"type": "body", "parameters": [{"type": "text", "text": "a"}] * 2}], []),
        ([{"type": "BODY", "parameters": [{"type": "text", "text": "a"}]}], ["expects 2"]),
        ([], ["the body expects 2 parameter(s), got 0"]),
        (
            [
                {"type": "body", "parameters": [{"type": "text", "text": "a"}] * 2},
                {"type": "header", "parameters": [{"type": "text", "text": "a"}]},
            ],
            ["the header takes no parameters, got 1"],
        ),
        ([{"type": "body", "parameters": "not a list"}], ["got 0"]),
    ],
)
def test_parameter_counts(given: list[Any], problems: list[str]) -> None:
    found = parameter_problems(placeholders([_body("{{1}} {{2}}")]), given)
    assert len(found) == len(problems)
    for text, expected in zip(found, problems, strict=True):
        assert expected in text


def test_named_parameters_must_be_named() -> None:
    expected = placeholders([_body("Hi {{first_name}}")])
    named = [{"type": "text", "parameter_name": "first_name", "text": "Ada"}]
    assert parameter_problems(expected, [{"type": "body", "parameters": named}]) == []
    unnamed = [{"type": "text", "text": "Ada"}]
    assert parameter_problems(expected, [{"type": "body", "parameters": unnamed}]) == [
        "the body needs the named parameters first_name"
    ]
