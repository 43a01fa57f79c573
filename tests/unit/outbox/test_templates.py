"""Template placeholders and the parameter check (``outbox.templates``), pure."""

from __future__ import annotations

from typing import Any

import pytest

from outbox.templates import Placeholders, button_problems, parameter_problems, placeholders


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


BUTTONS = [
    {
        "type": "BUTTONS",
        "buttons": [
            {"type": "QUICK_REPLY", "text": "Stop"},
            {"type": "URL", "text": "Track", "url": "https://example.com/t/{{1}}"},
            {"type": "URL", "text": "Home", "url": "https://example.com"},
        ],
    }
]


def _url_button(index: object) -> dict[str, Any]:
    return {"type": "button", "sub_type": "url", "index": index, "parameters": [{"type": "text"}]}


def test_dynamic_url_buttons_need_their_parameter() -> None:
    assert button_problems(BUTTONS, [_url_button("1")]) == []
    assert button_problems(BUTTONS, [_url_button(1)]) == []
    assert button_problems(BUTTONS, []) == ["the URL button at index 1 needs its parameter"]
    assert button_problems(BUTTONS, [_url_button("1"), _url_button("2")]) == [
        "the button at index 2 has no dynamic URL"
    ]
    assert button_problems(BUTTONS, [_url_button("x")]) == [
        "a url button component needs a numeric index"
    ]
    quick = {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": []}
    assert button_problems(BUTTONS, [_url_button("1"), quick]) == []
    assert button_problems([{"type": "BODY", "text": "hi"}], []) == []
