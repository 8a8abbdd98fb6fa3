"""The ``auth:`` section of app.yaml, read once at load time into an ``AuthConfig``.

An app has built-in authentication when its app.yaml has an ``auth:`` section (``auth: {}``
takes every default). Everything is checked here, with file:line, so that ``flowengine
check`` finds a bad lifetime or a broken email template before a server starts::

    auth:
      confirm_email: true                  # sign-up sends a verification link (default)
      redirect_url: "${AUTH_REDIRECT_URL}" # where email links land: ?action=&status=&access_token=
      base_url: "${PUBLIC_URL}"            # this server's public URL, for the links in emails
      session: { lifetime: 24h, idle: 1h, fresh: 5m }   # fresh: signed in this recently (see sessions.py)
      tokens: { verify_email: 24h, magic_link: 15m, reset_password: 30m, change_email: 30m, grant: 5m }
      password: { min_length: 8, bcrypt_cost: 12 }
      rate_limits:
        signin_ip: { limit: 30, window: 5m }
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from flowengine.errors import SpecError

DAY = 86400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DURATION = re.compile(r"^([0-9]+)(s|m|h|d)$")
#: A session's lifetime after sign-in and its idle timeout: the defaults are the most a setting
#: may be, NIST SP 800-63B-4 AAL2 (at most 24 hours; at most 1 hour unused). Shorter is fine
#: (rev 3's AAL2: 12 hours, 30 minutes).
SESSION_LIFETIME, SESSION_IDLE = DAY, 3600.0
#: How recently a fresh session signed in: 5 minutes by default, 30 at most (security S6).
FRESH, FRESH_CEILING = 300.0, 1800.0

#: Link-token purposes: the setting that names each one's lifetime, its default and its ceiling
#: (security E2, E4, E5, E6). A link that lives longer is a standing key to the account, so a
#: setting above its ceiling is an error.
TOKEN_LIFETIMES: Mapping[str, tuple[str, float, float]] = MappingProxyType({
    "verify": ("verify_email", DAY, DAY),
    "magic": ("magic_link", 900.0, 3600.0),
    "reset": ("reset_password", 1800.0, 3600.0),
    "change-email": ("change_email", 1800.0, 3600.0),
    "grant": ("grant", 300.0, 900.0),
})  # fmt: skip


@dataclass(frozen=True)
class RateLimit:
    """At most ``limit`` hits per fixed ``window`` of seconds."""

    limit: int
    window: float


#: What each limit counts, and its default.
RATE_LIMITS: Mapping[str, RateLimit] = MappingProxyType({
    "signin_ip": RateLimit(30, 300.0),       # sign-in attempts from one client address
    "signin_account": RateLimit(10, 900.0),  # password checks against one account (sign-in, change-pwd...)
    "signup_ip": RateLimit(20, 3600.0),      # accounts created from one client address
    "email_address": RateLimit(5, 3600.0),   # emails asked for one address (resend, magic link, reset)
    "email_spacing": RateLimit(1, 60.0),     # emails of one kind asked for one address (security E2, E4)
    "email_ip": RateLimit(30, 3600.0),       # emails asked from one client address
})  # fmt: skip


@dataclass(frozen=True)
class AuthConfig:
    """Checked auth settings, the email templates and the internal models auth stores."""

    confirm_email: bool = True
    redirect_url: str | None = None
    base_url: str | None = None
    session_lifetime: float = SESSION_LIFETIME
    session_idle: float = SESSION_IDLE
    #: A session signed in at most this long ago is fresh (``session: fresh`` endpoints, ``reauth`` fields).
    session_fresh: float = FRESH
    #: A boolean users field (``twoFactorAuth``): a user with it on signs in only through the
    #: app's own two-factor flow, never with the built-in password or magic-link sign-in.
    second_factor: str | None = None
    token_lifetimes: Mapping[str, float] = field(
        default_factory=lambda: {purpose: spec[1] for purpose, spec in TOKEN_LIFETIMES.items()}
    )
    min_password_length: int = 8
    bcrypt_cost: int = 12
    rate_limits: Mapping[str, RateLimit] = field(default_factory=lambda: dict(RATE_LIMITS))
    #: Email templates by name (see ``emails.py``).
    emails: Mapping[str, Any] = field(default_factory=dict)
    #: Models auth keeps for itself (``_sessions``): stored, never visible to flows or APIs.
    models: Mapping[str, Any] = field(default_factory=dict)


def seconds(value: Any) -> float:
    """A duration from app.yaml: whole seconds, or text like ``90s``, ``15m``, ``24h``, ``30d``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use seconds, or text like 15m, 24h, 30d)")
    return int(match[1]) * _UNITS[match[2]]


def load_config(section: Mapping[str, Any], where: Any, root: Path) -> tuple[AuthConfig, list[SpecError]]:
    """The ``auth:`` section (already schema-checked) as an ``AuthConfig``; ``where(*keys)``
    locates a value of app.yaml for messages."""
    from flowengine.auth.emails import load_templates
    from flowengine.auth.sessions import internal_models

    problems: list[SpecError] = []
    session = section.get("session") or {}
    password = section.get("password") or {}
    emails, found = load_templates(root)
    problems.extend(found)
    config = AuthConfig(
        confirm_email=section.get("confirm_email", True),
        redirect_url=section.get("redirect_url") or None,
        base_url=(section.get("base_url") or "").rstrip("/") or None,
        session_lifetime=_session_limit(session, "lifetime", SESSION_LIFETIME, where, problems),
        session_idle=_session_limit(session, "idle", SESSION_IDLE, where, problems),
        session_fresh=_fresh(session, where, problems),
        second_factor=section.get("second_factor") or None,
        token_lifetimes=_lifetimes(section.get("tokens") or {}, where, problems),
        min_password_length=password.get("min_length", 8),
        bcrypt_cost=password.get("bcrypt_cost", 12),
        rate_limits={**RATE_LIMITS, **_limits(section.get("rate_limits") or {})},
        emails=emails,
        models=internal_models(),
    )
    return config, problems


def _session_limit(session: Mapping[str, Any], name: str, ceiling: float, where: Any, problems: list[SpecError]) -> float:
    limit = seconds(session.get(name, ceiling))
    if limit > ceiling:
        what = "last at most 24 hours after sign-in" if name == "lifetime" else "stay unused at most 1 hour"
        problems.append(SpecError(where("auth", "session", name), f"a session may {what}, not {session[name]}"))
    return limit


def _lifetimes(tokens: Mapping[str, Any], where: Any, problems: list[SpecError]) -> dict[str, float]:
    lifetimes = {}
    for purpose, (name, default, ceiling) in TOKEN_LIFETIMES.items():
        lifetime = seconds(tokens.get(name, default))
        if lifetime > ceiling:
            hours = int(ceiling // 3600)
            most = f"{int(ceiling // 60)} minutes" if ceiling < 3600 else f"{hours} hour{'s' if hours > 1 else ''}"
            message = f"a {name.replace('_', ' ')} token may live at most {most}, not {tokens[name]}"
            problems.append(SpecError(where("auth", "tokens", name), message))
        lifetimes[purpose] = lifetime
    return lifetimes


def _fresh(session: Mapping[str, Any], where: Any, problems: list[SpecError]) -> float:
    fresh = seconds(session.get("fresh", FRESH))
    if fresh > FRESH_CEILING:
        message = f"a session may count as freshly signed in for at most 30 minutes, not {session['fresh']}"
        problems.append(SpecError(where("auth", "session", "fresh"), message))
    return fresh


def _limits(section: Mapping[str, Any]) -> dict[str, RateLimit]:
    return {name: RateLimit(spec["limit"], seconds(spec["window"])) for name, spec in section.items()}
