"""``${VAR}`` and ``${VAR:-default}`` in app settings, so secrets live in the environment.

A reference to a variable that is unset and has no default is a check error at the line
that uses it. ``$$`` writes a literal dollar sign. A ``${`` that forms no reference
(``${SECRET`` unclosed, ``${1X}``) is a check error too, never text that slips through.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from flowengine.errors import SpecError
from flowengine.spec.yamlfile import Document

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\{[^}$\s]*\}?")


def substitute(document: Document, environ: Mapping[str, str]) -> list[SpecError]:
    """Replace references in every string of ``document.data``; return what was missing."""
    problems: list[SpecError] = []
    document.data = _walk(document.data, (), document, environ, problems)
    return problems


def _walk(value: Any, path: tuple, document: Document, environ: Mapping[str, str], problems: list) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, path + (k,), document, environ, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, path + (i,), document, environ, problems) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        return _expand(value, path, document, environ, problems)
    return value


def _expand(text: str, path: tuple, document: Document, environ: Mapping[str, str], problems: list) -> str:
    def replace(match: re.Match[str]) -> str:
        reference, name, default = match.group(0, 1, 2)
        if reference == "$$":
            return "$"
        if name is None:
            message = f"'{reference}' is not a variable reference; write ${{NAME}} or ${{NAME:-default}} ($$ for a dollar sign)"
        elif name in environ:
            return environ[name]
        elif default is not None:
            return default
        else:
            message = f"environment variable '{name}' is not set (set it, or give a default: ${{{name}:-value}})"
        problems.append(SpecError(document.value_where(*path), message))
        return ""

    return _REFERENCE.sub(replace, text)
