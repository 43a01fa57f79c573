"""Template placeholders and the parameter check (``outbox.template_check``), pure."""

from __future__ import annotations

from typing import Any

import pytest

from outbox.template_check import (
    TEXT_TYPES,
    Placeholders,
    button_problems,
    parameter_problems,
    placeholders,
    problems,
)


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
        "header": Placeholders(1, frozenset(), frozenset({"image"}), "IMAGE")
    }
    assert placeholders([{"type": "HEADER", "format": "GIF"}]) == {
        "header": Placeholders(1, frozenset(), None, "GIF")
    }
    assert placeholders([{"type": "HEADER", "format": "TEXT", "text": "Sale"}]) == {}
    assert placeholders([{"type": "HEADER", "text": "{{n}}"}]) == {
        "header": Placeholders(1, frozenset({"n"}), TEXT_TYPES)
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
        "a button component needs a numeric index",
        "the URL button at index 1 needs its parameter",
    ]
    quick = {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": []}
    assert button_problems(BUTTONS, [_url_button("1"), quick]) == [
        "the button at index 0 (QUICK_REPLY) needs one payload parameter, got 0 parameters"
    ]
    assert button_problems([{"type": "BODY", "text": "hi"}], []) == []


# ---- headers ------------------------------------------------------------------------------------

SECRET = "Ada-Lovelace-42"
"""A parameter value: no refusal may echo it."""


def _header(fmt: str, text: str | None = None) -> list[dict[str, Any]]:
    header: dict[str, Any] = {"type": "HEADER", "format": fmt}
    if text is not None:
        header["text"] = text
    return [header, _body("Hello")]


def _given_header(*parameters: Any) -> list[dict[str, Any]]:
    return [{"type": "header", "parameters": list(parameters)}]


def _check(template: list[dict[str, Any]], given: list[dict[str, Any]]) -> list[str]:
    found = problems(template, given)
    assert all(SECRET not in p for p in found)
    return found


IMAGE = {"type": "image", "image": {"link": f"https://cdn.example/{SECRET}.png"}}


@pytest.mark.parametrize(
    ("fmt", "parameter"),
    [
        ("IMAGE", IMAGE),
        ("VIDEO", {"type": "video", "video": {"id": SECRET}}),
        ("DOCUMENT", {"type": "document", "document": {"id": SECRET, "filename": "a.pdf"}}),
        ("LOCATION", {"type": "location", "location": {"latitude": "1", "longitude": "2"}}),
        ("GIF", {"type": "video", "video": {"id": SECRET}}),
    ],
)
def test_a_media_header_takes_one_parameter_of_its_media(fmt: str, parameter: Any) -> None:
    assert _check(_header(fmt), _given_header(parameter)) == []


@pytest.mark.parametrize(
    ("fmt", "given", "problem"),
    [
        ("IMAGE", [], "the header (IMAGE) needs one image parameter, got 0"),
        ("IMAGE", _given_header(), "the header (IMAGE) needs one image parameter, got 0"),
        (
            "IMAGE",
            _given_header(IMAGE, IMAGE),
            "the header (IMAGE) needs one image parameter, got 2",
        ),
        (
            "VIDEO",
            _given_header(IMAGE),
            "the header (VIDEO) needs one video parameter, got image",
        ),
        (
            "DOCUMENT",
            _given_header({"type": "text", "text": SECRET}),
            "the header (DOCUMENT) needs one document parameter, got text",
        ),
        (
            "LOCATION",
            _given_header({"type": SECRET}),
            "the header (LOCATION) needs one location parameter, got another",
        ),
        ("GIF", [], "the header (GIF) needs one parameter, got 0"),
    ],
)
def test_a_media_header_refusal_says_what_is_wrong(
    fmt: str, given: list[dict[str, Any]], problem: str
) -> None:
    assert _check(_header(fmt), given) == [problem]


def test_a_text_header_takes_its_placeholder_as_text() -> None:
    template = _header("TEXT", "Order {{1}}")
    assert _check(template, _given_header({"type": "text", "text": SECRET})) == []
    assert _check(template, []) == ["the header expects 1 parameter(s), got 0"]
    assert _check(template, _given_header(IMAGE)) == [
        "the header parameter 1 must be currency, date_time or text, got image"
    ]
    assert _check(_header("TEXT", "Sale"), _given_header({"type": "text", "text": SECRET})) == [
        "the header takes no parameters, got 1"
    ]


def test_a_named_text_header_needs_its_parameter_name() -> None:
    template = _header("TEXT", "Sale starts {{sale_start_date}}")
    named = {"type": "text", "parameter_name": "sale_start_date", "text": SECRET}
    assert _check(template, _given_header(named)) == []
    assert _check(template, _given_header({"type": "text", "text": SECRET})) == [
        "the header needs the named parameters sale_start_date"
    ]


def test_body_parameter_types_and_repeated_components() -> None:
    template = [_body("Pay {{1}} by {{2}}")]
    currency = {"type": "currency", "currency": {"fallback_value": SECRET, "code": "USD"}}
    date = {"type": "date_time", "date_time": {"fallback_value": SECRET}}
    given = [{"type": "body", "parameters": [currency, date]}]
    assert _check(template, given) == []
    assert _check(template, [{"type": "body", "parameters": [IMAGE, date]}]) == [
        "the body parameter 1 must be currency, date_time or text, got image"
    ]
    assert _check(template, [*given, *given]) == ["the body component is given more than once"]


# ---- buttons ------------------------------------------------------------------------------------

ALL_BUTTONS = [
    _body("Hello"),
    {
        "type": "BUTTONS",
        "buttons": [
            {"type": "QUICK_REPLY", "text": "Stop"},  # 0
            {"type": "URL", "text": "Track", "url": "https://t.example/{{1}}"},  # 1
            {"type": "COPY_CODE", "example": "SAVE10"},  # 2
            {"type": "PHONE_NUMBER", "text": "Call", "phone_number": "+15550100"},  # 3
            {"type": "FLOW", "text": "Book", "flow_id": "1"},  # 4
            {"type": "VOICE_CALL", "text": "Call us"},  # 5: not checked
        ],
    },
]


def _button(sub_type: str, index: object, *parameters: Any) -> dict[str, Any]:
    return {"type": "button", "sub_type": sub_type, "index": index, "parameters": list(parameters)}


URL_PARAM = {"type": "text", "text": SECRET}
COUPON = {"type": "coupon_code", "coupon_code": SECRET}
REQUIRED = [_button("url", "1", URL_PARAM), _button("COPY_CODE", 2, COUPON)]


def test_required_buttons_url_and_copy_code() -> None:
    assert _check(ALL_BUTTONS, REQUIRED) == []
    assert _check(ALL_BUTTONS, []) == [
        "the URL button at index 1 needs its parameter",
        "the COPY_CODE button at index 2 needs its parameter",
    ]


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ([_button("quick_reply", "0", {"type": "payload", "payload": SECRET})], None),
        ([_button("flow", "4", {"type": "action", "action": {"flow_token": SECRET}})], None),
        ([_button("voice_call", "5", {"type": SECRET})], None),
        (
            [_button("quick_reply", "0", {"type": "text", "text": SECRET})],
            "the button at index 0 (QUICK_REPLY) needs one payload parameter, got text",
        ),
        (
            [_button("quick_reply", "0")],
            "the button at index 0 (QUICK_REPLY) needs one payload parameter, got 0 parameters",
        ),
        (
            [_button("url", "0", {"type": "payload", "payload": SECRET})],
            "the button at index 0 (QUICK_REPLY) needs sub_type quick_reply",
        ),
        (
            [_button(SECRET, "0", {"type": "payload", "payload": SECRET})],
            "the button at index 0 (QUICK_REPLY) needs sub_type quick_reply",
        ),
        (
            [_button("url", "3", URL_PARAM)],
            "the button at index 3 (PHONE_NUMBER) takes no parameters",
        ),
        (
            [_button("quick_reply", "6", {"type": "payload"})],
            "the template has no button at index 6",
        ),
        (
            [_button("quick_reply", "-1", {"type": "payload"})],
            "the template has no button at index -1",
        ),
        ([_button("url", SECRET, URL_PARAM)], "a button component needs a numeric index"),
        ([_button("url", None, URL_PARAM)], "a button component needs a numeric index"),
        ([_button("url", "1", URL_PARAM)], "the button at index 1 is given more than once"),
        (
            [_button("flow", "4", {"type": "text", "text": SECRET})],
            "the button at index 4 (FLOW) needs one action parameter, got text",
        ),
    ],
)
def test_button_components_are_checked_against_the_templates_buttons(
    extra: list[dict[str, Any]], problem: str | None
) -> None:
    assert _check(ALL_BUTTONS, [*REQUIRED, *extra]) == ([problem] if problem else [])


def test_url_and_copy_code_parameters_have_their_types() -> None:
    wrong = [_button("url", "1", COUPON), _button("copy_code", "2", URL_PARAM, URL_PARAM)]
    assert _check(ALL_BUTTONS, wrong) == [
        "the button at index 1 (URL) needs one text parameter, got coupon_code",
        "the button at index 2 (COPY_CODE) needs one coupon_code parameter, got 2 parameters",
    ]


def test_authentication_otp_button_takes_the_code_as_a_url_parameter() -> None:
    template = [
        _body("{{1}} is your verification code."),
        {"type": "BUTTONS", "buttons": [{"type": "OTP", "otp_type": "COPY_CODE"}]},
    ]
    body = {"type": "body", "parameters": [URL_PARAM]}
    assert _check(template, [body, _button("url", "0", URL_PARAM)]) == []
    assert _check(template, [body]) == ["the OTP button at index 0 needs its parameter"]
    assert _check(template, [body, _button("copy_code", 0, COUPON)]) == [
        "the button at index 0 (OTP) needs sub_type url"
    ]


def test_a_template_without_buttons_refuses_button_components() -> None:
    assert _check([_body("Hi")], [_button("quick_reply", "0", {"type": "payload"})]) == [
        "the template has no button at index 0"
    ]


def test_unknown_components_pass_unchecked() -> None:
    given: list[Any] = [{"type": "carousel", "cards": []}, {"type": "limited_time_offer"}, "junk"]
    assert _check([_body("Hi"), {"type": "CAROUSEL", "cards": []}], given) == []
