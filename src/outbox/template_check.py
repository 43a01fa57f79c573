"""Does a template send's ``components`` fit the template's placeholders? (pure: no I/O)

The template side is the ``components`` of a Graph template (``GET /{waba_id}/message_templates``:
``HEADER`` with a ``format``, ``BODY``, ``FOOTER``, ``BUTTONS`` with ``buttons``); the send side
is the Cloud API send shape (``{"type": "header" | "body" | "button", "sub_type", "index",
"parameters": [...]}``). The rules follow Meta's send-template documentation:

* **Text header and body**: as many parameters as the text has distinct placeholders; positional
  ``{{1}}`` or named ``{{first_name}}`` (the template's ``parameter_format`` NAMED), whose
  parameters must carry every ``parameter_name``. Parameter types: ``text``, ``currency``,
  ``date_time``. A component without placeholders takes none.
* **Media header** (``IMAGE``, ``VIDEO``, ``DOCUMENT``, ``LOCATION``, ``GIF``): exactly one
  parameter, of that media's type (``image``, ``video``, ``document``, ``location``; a GIF's is
  not checked). Required: the template's sample media is not sent.
* **Buttons** (``index``: the button's zero-based position in the template's ``BUTTONS``): a
  ``button`` component has one parameter and the ``sub_type`` of the template's button:
  ``URL`` with a placeholder → ``url`` + ``text`` (required); ``OTP`` (authentication) → ``url``
  + ``text`` (required); ``COPY_CODE`` → ``copy_code`` + ``coupon_code`` (required);
  ``QUICK_REPLY`` → ``quick_reply`` + ``payload`` (optional); ``FLOW``, ``CATALOG``, ``MPM`` →
  their sub_type + ``action`` (optional). A static ``URL`` or ``PHONE_NUMBER`` button takes no
  component; an index the template has no button at is refused. Other button types are not
  checked.

Problems name components, indices, counts, types and the template's own placeholder names;
never a parameter value or anything else the client sent (an unknown ``type`` or ``sub_type`` is
called "another"). Components this module does not know (``footer``, ``carousel``, ``limited_time
_offer``, …) pass unchecked: Graph has the last word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ButtonRule",
    "Placeholders",
    "button_problems",
    "parameter_problems",
    "placeholders",
    "problems",
]

PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
TEXT_TYPES: Final = frozenset({"text", "currency", "date_time"})
_MEDIA_HEADERS: Final[Mapping[str, frozenset[str] | None]] = {
    "IMAGE": frozenset({"image"}),
    "VIDEO": frozenset({"video"}),
    "DOCUMENT": frozenset({"document"}),
    "LOCATION": frozenset({"location"}),
    "GIF": None,
}
_KNOWN_PARAMETER_TYPES: Final = TEXT_TYPES | {
    "image",
    "video",
    "document",
    "location",
    "payload",
    "coupon_code",
    "action",
}


@dataclass(frozen=True, slots=True)
class Placeholders:
    """What one component (``header`` or ``body``) of a template expects."""

    count: int
    names: frozenset[str]
    """Named parameters (``{{first_name}}``); empty for positional ``{{1}}``."""
    types: frozenset[str] | None = TEXT_TYPES
    """The parameter types it accepts (None: not checked)."""
    media: str | None = None
    """A media header's format (``IMAGE``, …); None for text."""


@dataclass(frozen=True, slots=True)
class ButtonRule:
    """What the ``button`` component for one template button must be."""

    kind: str
    """The template button's ``type`` (``URL``, ``QUICK_REPLY``, …)."""
    sub_type: str | None
    """The component's ``sub_type``; None: the button takes no component."""
    parameter: str = ""
    required: bool = False


_BUTTON_RULES: Final[Mapping[str, tuple[str, str, bool]]] = {
    "OTP": ("url", "text", True),
    "COPY_CODE": ("copy_code", "coupon_code", True),
    "QUICK_REPLY": ("quick_reply", "payload", False),
    "FLOW": ("flow", "action", False),
    "CATALOG": ("catalog", "action", False),
    "MPM": ("mpm", "action", False),
}


def _upper(value: Any) -> str:
    return str(value or "").upper()


def placeholders(components: Iterable[Any]) -> dict[str, Placeholders]:
    """Expected parameters per component type (lower case) of a template's Graph components."""
    out: dict[str, Placeholders] = {}
    for component in components:
        if not isinstance(component, dict):
            continue
        kind = str(component.get("type", "")).lower()
        if kind not in ("header", "body"):
            continue
        fmt = _upper(component.get("format") or "TEXT")
        if kind == "header" and fmt in _MEDIA_HEADERS:
            out[kind] = Placeholders(1, frozenset(), _MEDIA_HEADERS[fmt], fmt)
            continue
        found = PLACEHOLDER.findall(str(component.get("text") or ""))
        named = frozenset(p for p in found if not p.isdigit())
        count = len(set(found))
        if count:
            out[kind] = Placeholders(count, named)
    return out


def _type_of(parameter: Any) -> str:
    value = str(parameter.get("type", "")).lower() if isinstance(parameter, dict) else ""
    return value if value in _KNOWN_PARAMETER_TYPES else "another"


def _parameters(component: dict[str, Any]) -> list[Any]:
    params = component.get("parameters")
    return list(params) if isinstance(params, list) else []


def _one_of(types: frozenset[str]) -> str:
    ordered = sorted(types)
    return ordered[0] if len(ordered) == 1 else ", ".join(ordered[:-1]) + " or " + ordered[-1]


def parameter_problems(expected: dict[str, Placeholders], components: Iterable[Any]) -> list[str]:
    """What is wrong with the command's ``header`` and ``body`` parameters."""
    given: dict[str, list[Any]] = {}
    problems: list[str] = []
    for component in components:
        if not isinstance(component, dict):
            continue
        kind = str(component.get("type", "")).lower()
        if kind not in ("header", "body"):
            continue
        if kind in given:
            problems.append(f"the {kind} component is given more than once")
            continue
        given[kind] = _parameters(component)
    for kind in ("header", "body"):
        want = expected.get(kind)
        got = given.get(kind, [])
        if want is None:
            if got:
                problems.append(f"the {kind} takes no parameters, got {len(got)}")
            continue
        problems += _component_problems(kind, want, got)
    return problems


def _component_problems(kind: str, want: Placeholders, got: list[Any]) -> list[str]:
    if want.media is not None:
        what = f"one {_one_of(want.types)} parameter" if want.types else "one parameter"
        if len(got) != 1:
            return [f"the {kind} ({want.media}) needs {what}, got {len(got)}"]
        if want.types and _type_of(got[0]) not in want.types:
            return [f"the {kind} ({want.media}) needs {what}, got {_type_of(got[0])}"]
        return []
    if len(got) != want.count:
        return [f"the {kind} expects {want.count} parameter(s), got {len(got)}"]
    problems = [
        f"the {kind} parameter {n} must be {_one_of(want.types)}, got {_type_of(p)}"
        for n, p in enumerate(got, start=1)
        if want.types and _type_of(p) not in want.types
    ]
    if want.names:
        names = {p.get("parameter_name") for p in got if isinstance(p, dict)}
        missing = sorted(want.names - names)
        if missing:
            problems.append(f"the {kind} needs the named parameters {', '.join(missing)}")
    return problems


def _button_rules(template: Iterable[Any]) -> dict[int, ButtonRule]:
    """The rule of each template button whose component is checked, by index."""
    rules: dict[int, ButtonRule] = {}
    for component in template:
        if not isinstance(component, dict) or _upper(component.get("type")) != "BUTTONS":
            continue
        buttons = component.get("buttons")
        for index, button in enumerate(buttons if isinstance(buttons, list) else []):
            kind = _upper(button.get("type")) if isinstance(button, dict) else ""
            if kind == "URL":
                if PLACEHOLDER.search(str(button.get("url") or "")):
                    rules[index] = ButtonRule(kind, "url", "text", required=True)
                else:
                    rules[index] = ButtonRule(kind, None)
            elif kind == "PHONE_NUMBER":
                rules[index] = ButtonRule(kind, None)
            elif kind in _BUTTON_RULES:
                sub_type, parameter, required = _BUTTON_RULES[kind]
                rules[index] = ButtonRule(kind, sub_type, parameter, required)
    return rules


def _button_count(template: Iterable[Any]) -> int:
    for component in template:
        if isinstance(component, dict) and _upper(component.get("type")) == "BUTTONS":
            buttons = component.get("buttons")
            return len(buttons) if isinstance(buttons, list) else 0
    return 0


def button_problems(template: Iterable[Any], components: Iterable[Any]) -> list[str]:
    """What is wrong with the command's ``button`` components (see the module docstring)."""
    template = list(template)
    rules = _button_rules(template)
    count = _button_count(template)
    seen: set[int] = set()
    problems: list[str] = []
    for component in components:
        if not isinstance(component, dict) or str(component.get("type", "")).lower() != "button":
            continue
        try:
            index = int(str(component.get("index")))
        except ValueError:
            problems.append("a button component needs a numeric index")
            continue
        if index in seen:
            problems.append(f"the button at index {index} is given more than once")
            continue
        seen.add(index)
        if not 0 <= index < count:
            problems.append(f"the template has no button at index {index}")
            continue
        rule = rules.get(index)
        if rule is not None:
            problems += _button_component_problems(index, rule, component)
    problems += [
        f"the {rule.kind} button at index {index} needs its parameter"
        for index, rule in sorted(rules.items())
        if rule.required and index not in seen
    ]
    return problems


def _button_component_problems(
    index: int, rule: ButtonRule, component: dict[str, Any]
) -> list[str]:
    if rule.sub_type is None:
        if rule.kind == "URL":
            return [f"the button at index {index} has no dynamic URL"]
        return [f"the button at index {index} ({rule.kind}) takes no parameters"]
    sub_type = str(component.get("sub_type", "")).lower()
    if sub_type != rule.sub_type:
        return [f"the button at index {index} ({rule.kind}) needs sub_type {rule.sub_type}"]
    params = _parameters(component)
    if len(params) != 1 or _type_of(params[0]) != rule.parameter:
        got = _type_of(params[0]) if len(params) == 1 else f"{len(params)} parameters"
        return [
            f"the button at index {index} ({rule.kind}) needs one {rule.parameter} parameter, "
            f"got {got}"
        ]
    return []


def problems(template: Iterable[Any], components: Iterable[Any]) -> list[str]:
    """Every mismatch between a template's Graph ``components`` and a send's ``components``."""
    template = list(template)
    components = list(components)
    return parameter_problems(placeholders(template), components) + button_problems(
        template, components
    )
