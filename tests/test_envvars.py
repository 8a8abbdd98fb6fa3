"""``${VAR}`` in settings: secrets come from the environment, a missing one is a check error,
and a whole reference takes the type (integer, number, boolean) its setting wants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowengine.cli import main
from flowengine.errors import SpecErrors
from flowengine.spec import envvars
from flowengine.spec.app import load_app
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
        ("${PORT:-8000}", {"PORT": ""}, "8000"),  # as in the shell: empty takes the default
        ("${TOKEN}", {"TOKEN": ""}, ""),
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


# Typed settings: the environment holds text, the schema says what a whole reference becomes.


def _load(tmp_path: Path, settings: str, environ: dict[str, str]) -> dict[str, Any]:
    (tmp_path / "app.yaml").write_text("name: typed\n" + settings)
    return load_app(tmp_path, environ).settings


def _problems(tmp_path: Path, settings: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(SpecErrors) as raised:
        _load(tmp_path, settings, environ)
    return [str(problem) for problem in raised.value.errors]


@pytest.mark.parametrize(
    ("settings", "environ", "path", "expected"),
    [
        ("limits: {steps: '${STEPS}'}", {"STEPS": "250"}, ("limits", "steps"), 250),
        ("limits: {steps: '${STEPS}'}", {"STEPS": "+7"}, ("limits", "steps"), 7),
        ("limits: {timeout: '${TIMEOUT}'}", {"TIMEOUT": "0.5"}, ("limits", "timeout"), 0.5),
        ("limits: {timeout: '${TIMEOUT}'}", {"TIMEOUT": "1e3"}, ("limits", "timeout"), 1000.0),
        ("limits: {timeout: '${TIMEOUT}'}", {"TIMEOUT": "3"}, ("limits", "timeout"), 3),
        ("limits: {timeout: '${TIMEOUT}'}", {"TIMEOUT": "2s"}, ("limits", "timeout"), "2s"),
        ("cors: {credentials: '${CREDS}'}", {"CREDS": "true"}, ("cors", "credentials"), True),
        ("cors: {credentials: '${CREDS}'}", {"CREDS": "FALSE"}, ("cors", "credentials"), False),
        ("cors: {credentials: '${CREDS}'}", {"CREDS": "1"}, ("cors", "credentials"), True),
        ("cors: {credentials: '${CREDS}'}", {"CREDS": "0"}, ("cors", "credentials"), False),
        ("auth: {session: {idle: '${IDLE}'}}", {"IDLE": "600"}, ("auth", "session", "idle"), 600),
        ("auth: {session: {idle: '${IDLE}'}}", {"IDLE": "15m"}, ("auth", "session", "idle"), "15m"),
        ("auth: {password: {bcrypt_cost: '${COST:-12}'}}", {}, ("auth", "password", "bcrypt_cost"), 12),
        ("auth: {password: {bcrypt_cost: '${COST:-12}'}}", {"COST": "10"}, ("auth", "password", "bcrypt_cost"), 10),
        ("sms: {limits: {per_hour: '${PER_HOUR:-30}'}}", {}, ("sms", "limits", "per_hour"), 30),
        ("sms: {twilio: {timeout: '${TWILIO_TIMEOUT}'}}", {"TWILIO_TIMEOUT": "2.5"}, ("sms", "twilio", "timeout"), 2.5),
        ("email: {smtp: {port: '${SMTP_PORT:-587}'}}", {}, ("email", "smtp", "port"), 587),
        ("email: {smtp: {port: '${SMTP_PORT:-587}'}}", {"SMTP_PORT": "2525"}, ("email", "smtp", "port"), 2525),
        ("email: {smtp: {timeout: '${SMTP_TIMEOUT}'}}", {"SMTP_TIMEOUT": "0.5"}, ("email", "smtp", "timeout"), 0.5),
        ("email: {smtp: {password: '${PASSWORD}'}}", {"PASSWORD": "123456"}, ("email", "smtp", "password"), "123456"),
    ],
)
def test_a_whole_reference_takes_the_type_its_setting_wants(
    tmp_path: Path, settings: str, environ: dict[str, str], path: tuple, expected: object
) -> None:
    value: Any = _load(tmp_path, settings + "\n", environ)
    for key in path:
        value = value[key]

    assert (value, type(value)) == (expected, type(expected))


def test_a_converted_value_reaches_the_auth_config(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text("name: typed\nauth:\n  password:\n    bcrypt_cost: ${BCRYPT_COST:-12}\n")

    app = load_app(tmp_path, {"BCRYPT_COST": "11"})

    assert app.auth.bcrypt_cost == 11


def test_text_settings_stay_text_however_numeric(tmp_path: Path) -> None:
    settings = "secret: ${APP_SECRET}\nversion: ${VERSION}\nenv:\n  pin: ${PIN}\napi_keys: ['${KEY}']\n"

    loaded = _load(tmp_path, settings, {"APP_SECRET": "123456", "VERSION": "2", "PIN": "0042", "KEY": "true"})

    assert loaded == {"name": "typed", "secret": "123456", "version": "2", "env": {"pin": "0042"}, "api_keys": ["true"]}


def test_a_reference_inside_other_text_stays_text(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "cors:\n  max_age: '${AGE}0'\n", {"AGE": "6"})

    assert problems == ["app.yaml:3:3: 'max_age' must be an integer, got text (\"60\")"]


@pytest.mark.parametrize(
    ("settings", "environ", "problem"),
    [
        (
            "auth:\n  password:\n    bcrypt_cost: ${BCRYPT_COST}\n",
            {"BCRYPT_COST": "twelve"},
            "app.yaml:4:18: environment variable 'BCRYPT_COST' is 'twelve'; auth.password.bcrypt_cost expects an integer",
        ),
        (
            "auth:\n  password:\n    bcrypt_cost: ${BCRYPT_COST:-12.5}\n",
            {},
            "app.yaml:4:18: environment variable 'BCRYPT_COST' is not set and its default is '12.5'; "
            "auth.password.bcrypt_cost expects an integer",
        ),
        (
            "cors: {credentials: '${CREDS}'}\n",
            {"CREDS": "yes"},
            "app.yaml:2:21: environment variable 'CREDS' is 'yes'; cors.credentials expects true or false (also 1 or 0)",
        ),
        (
            "limits: {timeout: '${TIMEOUT}'}\n",
            {"TIMEOUT": "inf"},
            "app.yaml:2:19: environment variable 'TIMEOUT' is 'inf'; "
            "limits.timeout expects seconds, or text like '500ms', '2s', '1m'",
        ),
        (
            "limits: {steps: '${STEPS}'}\n",
            {"STEPS": "sk_live_0123456789abcdef"},
            "app.yaml:2:17: environment variable 'STEPS' is a 24-character value; limits.steps expects an integer",
        ),
    ],
)
def test_a_value_that_does_not_convert_is_reported_once_at_its_line(
    tmp_path: Path, settings: str, environ: dict[str, str], problem: str
) -> None:
    assert _problems(tmp_path, settings, environ) == [problem]


def test_a_converted_value_still_meets_the_schema(tmp_path: Path) -> None:
    settings = "cors: {max_age: '${AGE}'}\nauth: {password: {bcrypt_cost: '${COST}'}}\n"

    problems = _problems(tmp_path, settings, {"AGE": "-3", "COST": "3"})

    assert problems == [
        "app.yaml:2:8: 'max_age' must be at least 0, got -3",
        "app.yaml:3:19: 'bcrypt_cost' must be at least 10, got 3",
    ]


def test_check_reports_a_value_that_does_not_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWENGINE_TEST_STEPS", "many")
    (tmp_path / "app.yaml").write_text("name: typed\nlimits:\n  steps: ${FLOWENGINE_TEST_STEPS:-100}\n")

    code = main(["check", str(tmp_path)])

    assert (code, capsys.readouterr().err.splitlines()) == (
        1,
        [
            "app.yaml:3:10: environment variable 'FLOWENGINE_TEST_STEPS' is 'many'; limits.steps expects an integer",
            "Error: 1 problem found",
        ],
    )
