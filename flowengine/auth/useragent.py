"""A session's ``User-Agent`` header as the ``userAgent`` object the Altogic client shows.

``{family, major, minor, patch, device: {family, brand, model}, os: {family, major, minor,
patch}}`` is exactly the shape of the uap-core parser ("Browserscope's user agent parser"),
so this uses its maintained Python port, ``ua-parser``, whose regex data is updated with
every new browser and device rather than a hand-kept list that would age in months.
Unknown parts read ``Other``, as uap-core says. The header is cut to a sane length first:
it is client input, and the parse runs on the event loop.
"""

from __future__ import annotations

from typing import Any

import ua_parser

#: Real user agents are a few hundred characters; anything beyond is noise (or an attack on the regexes).
MAX_LENGTH = 512
UNKNOWN = "Other"


def parse(header: str | None) -> dict[str, Any]:
    """The client's ``userAgent`` object for a header (``Other`` everywhere when absent)."""
    result = ua_parser.parse((header or "")[:MAX_LENGTH])
    agent, system, device = result.user_agent, result.os, result.device
    return {
        **_version(agent),
        "device": {
            "family": device.family if device else UNKNOWN,
            "brand": device.brand if device else None,
            "model": device.model if device else None,
        },
        "os": _version(system),
    }


def _version(part: Any) -> dict[str, Any]:
    if part is None:
        return {"family": UNKNOWN, "major": None, "minor": None, "patch": None}
    return {"family": part.family, "major": part.major, "minor": part.minor, "patch": part.patch}


def compact(agent: dict[str, Any]) -> dict[str, Any]:
    """The object without its nulls, as a model's object field stores it."""
    return {k: compact(v) if isinstance(v, dict) else v for k, v in agent.items() if v is not None}


def complete(stored: dict[str, Any] | None) -> dict[str, Any]:
    """A stored (compacted) object back in full shape, nulls included."""
    stored = stored or {}
    full = {**_version(None), **stored, "device": {"family": UNKNOWN, "brand": None, "model": None}}
    full["device"].update(stored.get("device") or {})
    full["os"] = {**_version(None), **(stored.get("os") or {})}
    return full


def warm_up() -> None:
    """Compile the parser's regexes now (about 0.1 s) rather than in the first sign-in."""
    parse("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36")
