"""``${VAR}`` in settings: secrets come from the environment, and a missing one is a check error."""

from __future__ import annotations

import pytest

from flowengine.spec import envvars
from flowengine.spec.yamlfile import loads


def _substitute(text: str, environ: dict[str, str]) -> tuple[object, list[str]]:
    document = loads(text, "app.yaml")
    problems = envvars.substitute(document, environ)
    return document.data, [str(problem) for problem in problems]


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("${TOKEN}", {"TOKEN": "abc"}, "abc"),
        ("Bearer ${TOKEN}!", {"TOKEN": "abc"}, "Bearer abc!"),
        ("${HOST}:${PORT}", {"HOST": "db", "PORT": "5432"}, "db:5432"),
        ("${PORT:-8000}", {}, "8000"),
        ("${PORT:-8000}", {"PORT": "9000"}, "9000"),
        ("${PORT:-8000}", {"PORT": ""}, ""),
        ("${REDIS_URL:-}", {}, ""),
        ("${URL:-redis://localhost:6379/0}", {}, "redis://localhost:6379/0"),
        ("price: $$5", {}, "price: $5"),
        ("$${TOKEN}", {"TOKEN": "abc"}, "${TOKEN}"),
        ("$5 and $HOME stay", {"HOME": "/root"}, "$5 and $HOME stay"),
        ("no references", {}, "no references"),
    ],
)
def test_references_are_replaced(value: str, environ: dict[str, str], expected: str) -> None:
    data, problems = _substitute(f"value: '{value}'\n", environ)

    assert (data, problems) == ({"value": expected}, [])


def test_a_value_from_the_environment_is_not_expanded_again() -> None:
    data, problems = _substitute("value: ${A}\n", {"A": "${B}", "B": "no"})

    assert (data, problems) == ({"value": "${B}"}, [])


def test_every_string_in_nested_settings_is_substituted() -> None:
    text = "sms:\n  twilio:\n    sid: ${SID}\n  allowed: [US, '${EXTRA:-GB}']\n  keep: 50\n"

    data, problems = _substitute(text, {"SID": "AC1"})

    assert problems == []
    assert data == {"sms": {"twilio": {"sid": "AC1"}, "allowed": ["US", "GB"], "keep": 50}}


def test_a_missing_variable_is_reported_where_it_is_used() -> None:
    text = "name: app\nemail:\n  smtp:\n    password: '${SMTP_PASSWORD}'\n"

    data, problems = _substitute(text, {})

    assert problems == [
        "app.yaml:4:15: environment variable 'SMTP_PASSWORD' is not set "
        "(set it, or give a default: ${SMTP_PASSWORD:-value})"
    ]
    assert data["email"]["smtp"]["password"] == ""


def test_every_missing_variable_is_reported_at_once() -> None:
    text = "keys:\n  - ${ONE}\n  - ${TWO}-${THREE:-3}-${FOUR}\n"

    _, problems = _substitute(text, {})

    assert [p.split(": ", 1)[1] for p in problems] == [
        "environment variable 'ONE' is not set (set it, or give a default: ${ONE:-value})",
        "environment variable 'TWO' is not set (set it, or give a default: ${TWO:-value})",
        "environment variable 'FOUR' is not set (set it, or give a default: ${FOUR:-value})",
    ]
    assert [p.split(": ", 1)[0] for p in problems] == ["app.yaml:2:5", "app.yaml:3:5", "app.yaml:3:5"]


@pytest.mark.parametrize("reference", ["${SECRET", "${1ST}", "${}", "${A-B}", "${A:b}"])
def test_a_malformed_reference_is_reported_not_kept(reference: str) -> None:
    _, problems = _substitute(f"key: 'x {reference} y'\n", {"SECRET": "s", "A": "a"})

    assert problems == [
        f"app.yaml:1:6: '{reference}' is not a variable reference; "
        "write ${NAME} or ${NAME:-default} ($$ for a dollar sign)"
    ]


def test_keys_and_non_text_values_are_left_alone() -> None:
    data, problems = _substitute("${KEY}: 1\nlimit: 5\nflag: false\nnothing: null\n", {"KEY": "k"})

    assert (data, problems) == ({"${KEY}": 1, "limit": 5, "flag": False, "nothing": None}, [])
