"""Loading an app's auth: the ``auth:`` section, the built-in users model and its extension,
reserved model names, email templates — every problem reported at load time with its place."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowengine.auth.config import DAY, RateLimit, seconds
from flowengine.auth.sessions import SESSIONS
from flowengine.errors import SpecErrors
from flowengine.spec.app import load_app


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def problems(folder: Path) -> list[str]:
    with pytest.raises(SpecErrors) as caught:
        load_app(folder)
    return [str(problem) for problem in caught.value.errors]


def test_an_auth_section_brings_the_built_in_users_and_the_defaults(tmp_path: Path) -> None:
    app = load_app(write(tmp_path, {"app.yaml": "name: a\nauth: {}\n"}))
    users = app.models["users"]
    assert list(users.fields) == ["provider", "providerUserId", "email", "password", "name", "profilePicture",
                                  "emailVerified", "phone", "phoneVerified", "lastLoginAt", "signUpAt"]  # fmt: skip
    assert users.fields["password"].type == "encrypted" and users.fields["email"].unique
    assert {name for name, f in users.fields.items() if f.readonly} >= {"email", "password", "emailVerified", "provider"}
    config = app.auth
    assert (config.confirm_email, config.min_password_length, config.bcrypt_cost) == (True, 8, 12)
    assert (config.session_lifetime, config.session_idle) == (DAY, 3600)  # NIST SP 800-63B-4 AAL2
    assert config.token_lifetimes == {"verify": DAY, "magic": 900, "reset": 1800, "change-email": 1800, "grant": 300}
    assert config.rate_limits["email_spacing"] == RateLimit(1, 60)  # security E2, E4
    assert SESSIONS not in app.models and SESSIONS in config.models  # stored, yet no flow or API can name it


def test_without_auth_an_app_has_no_users_model(tmp_path: Path) -> None:
    app = load_app(write(tmp_path, {"app.yaml": "name: a\n"}))
    assert app.auth is None and app.models == {}


def test_models_users_yaml_extends_the_built_in_model_and_turns_auth_on(tmp_path: Path) -> None:
    app = load_app(write(tmp_path, {
        "app.yaml": "name: a\n",
        "models/users.yaml": """\
            fields:
              twoFactorAuth: { type: boolean, default: false }
              name: { length: { max: 30 }, description: what we call you }
              phone: { type: phone, description: verified mobile }
        """,
    }))  # fmt: skip
    fields = app.models["users"].fields
    assert app.auth is not None
    assert fields["twoFactorAuth"].default is False
    assert (fields["name"].type, fields["name"].max_length, fields["name"].description) == ("text", 30, "what we call you")
    assert fields["phone"].readonly and fields["phone"].indexed  # built-in options kept
    assert "email" in fields and "password" in fields


def test_a_built_in_fields_type_cannot_change(tmp_path: Path) -> None:
    folder = write(tmp_path, {
        "app.yaml": "name: a\nauth: {}\n",
        "models/users.yaml": """\
            fields:
              email: { type: text }
              emailVerified: integer
              nickname: text
        """,
    })  # fmt: skip
    assert problems(folder) == [
        ("models/users.yaml:2:18: 'email' is a built-in field of users, of type email; "
         "an app may change its options but not its type (here text)"),
        ("models/users.yaml:3:18: 'emailVerified' is a built-in field of users, of type boolean; "
         "an app may change its options but not its type (here integer)"),
    ]


def test_model_names_starting_with_an_underscore_are_reserved(tmp_path: Path) -> None:
    folder = write(tmp_path, {"app.yaml": "name: a\nauth: {}\n", "models/_sessions.yaml": "fields: { x: text }\n"})
    assert problems(folder) == ["models/_sessions.yaml: model names starting with '_' are reserved for flowengine's own models"]


def test_token_lifetimes_have_ceilings(tmp_path: Path) -> None:
    folder = write(tmp_path, {"app.yaml": """\
        name: a
        auth:
          tokens: { magic_link: 61m, reset_password: 2h, verify_email: 2d, change_email: 3601, grant: 16m }
    """})  # fmt: skip
    assert problems(folder) == [
        "app.yaml:3:25: a magic link token may live at most 1 hour, not 61m",
        "app.yaml:3:46: a reset password token may live at most 1 hour, not 2h",
        "app.yaml:3:64: a verify email token may live at most 24 hours, not 2d",
        "app.yaml:3:82: a change email token may live at most 1 hour, not 3601",
        "app.yaml:3:95: a grant token may live at most 15 minutes, not 16m",
    ]
    write(tmp_path, {"app.yaml": "name: a\nauth: { tokens: { magic_link: 1h, reset_password: 1h, change_email: 1h } }\n"})
    assert load_app(folder).auth.token_lifetimes["reset"] == 3600  # the ceilings themselves are fine


def test_sessions_may_last_at_most_24_hours_and_stay_unused_at_most_an_hour(tmp_path: Path) -> None:
    folder = write(tmp_path, {"app.yaml": "name: a\nauth:\n  session: { lifetime: 30d, idle: 3601 }\n"})
    assert problems(folder) == [
        "app.yaml:3:24: a session may last at most 24 hours after sign-in, not 30d",
        "app.yaml:3:35: a session may stay unused at most 1 hour, not 3601",
    ]
    write(tmp_path, {"app.yaml": "name: a\nauth:\n  session: { lifetime: 12h, idle: 30m }\n"})  # NIST rev 3's AAL2
    config = load_app(folder).auth
    assert (config.session_lifetime, config.session_idle) == (12 * 3600, 1800)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("auth: { confirm: true }", "app.yaml:2:9: unknown key 'confirm' (did you mean 'confirm_email'?)"),
        ("auth: { password: { bcrypt_cost: 9 } }", "app.yaml:2:21: 'bcrypt_cost' must be at least 10, got 9"),
        ("auth: { password: { min_length: 6 } }", "app.yaml:2:21: 'min_length' must be at least 8, got 6"),
        ("auth: { session: { idle: 7 days } }",
         "app.yaml:2:20: 'idle' \"7 days\" is not valid: expected whole seconds, or text like '90s', '15m', '24h', '30d'"),
        ("auth: { rate_limits: { signin_ip: { limit: 0, window: 5m } } }", "app.yaml:2:37: 'limit' must be at least 1, got 0"),
        ("auth: { redirect_url: ftp://x }", "app.yaml:2:9: 'redirect_url' \"ftp://x\" is not valid: expected the front end's page"),
    ],
)
def test_the_auth_section_is_checked_against_its_schema(tmp_path: Path, section: str, expected: str) -> None:
    found = problems(write(tmp_path, {"app.yaml": f"name: a\n{section}\n"}))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_durations_read_as_seconds() -> None:
    assert [seconds(v) for v in (90, "90s", "15m", "24h", "30d")] == [90, 90, 900, 86400, 30 * DAY]
    with pytest.raises(ValueError):
        seconds("soon")


def test_an_apps_email_template_replaces_the_built_in_one(tmp_path: Path) -> None:
    folder = write(tmp_path, {
        "app.yaml": "name: a\nenv: { brand: Acme }\nauth: {}\n",
        "templates/auth/reset-password.html": "<title>Reset at {{ env.brand }}</title><a href='{{ link }}'>go</a>",
    })  # fmt: skip
    emails = load_app(folder).auth.emails
    scope = {"app": "a", "env": {"brand": "A&B"}, "user": {"name": None}, "email": "x@y.z", "link": "http://s/_auth/reset?key=k",
             "expires": "15 minutes"}  # fmt: skip
    subject, text, html = emails["reset-password"].render(scope)
    assert subject == "Reset at A&B" and "A&amp;B" in html and "href='http://s/_auth/reset?key=k'" in html
    assert "http://s/_auth/reset?key=k" in text  # the built-in text version still carries the link
    assert emails["magic-link"].render(scope)[0] == "Your sign-in link for a"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("<title>Hi {{ user.password }}</title> {{ secret }}", "templates/auth/verify-email.html: unknown name 'secret' in '{{ secret }}'"),
        ("<p>no title</p>", "templates/auth/verify-email.html: an auth email template needs a <title>: it is the email's subject"),
        ("<title>{{ link </title>", "templates/auth/verify-email.html: '{{' is never closed with '}}'"),
    ],
)
def test_broken_email_templates_are_reported_at_load(tmp_path: Path, template: str, expected: str) -> None:
    folder = write(tmp_path, {"app.yaml": "name: a\nauth: {}\n", "templates/auth/verify-email.html": template})
    (found,) = problems(folder)
    assert found.startswith(expected), found
