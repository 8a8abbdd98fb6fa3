"""``${VAR}`` and ``${VAR:-default}`` in app settings, so secrets live in the environment.

A reference to a variable that is unset and has no default is a check error at the line
that uses it; as in the shell, a default also stands in for a variable set to nothing
(``SMTP_SECURITY=`` gives ``${SMTP_SECURITY:-starttls}`` its default). ``$$`` writes a literal dollar sign. A ``${`` that forms no reference
(``${SECRET`` unclosed, ``${1X}``) is a check error too, never text that slips through.

The environment only holds text, so a value that is exactly one reference (``bcrypt_cost:
${BCRYPT_COST:-12}``) becomes the integer, number or boolean its schema wants there, when
its text would not do: ``convert`` reads the schema's own type errors to find those places.
Text the schema takes stays text, however numeric (a secret ``123456``), and so does a
reference inside other text (``http://${HOST}:8080``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jsonschema

from flowengine.errors import SpecError
from flowengine.spec.yamlfile import Document

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}|\$\{[^}$\s]*\}?")
#: A value that is exactly one reference, as ``_whole_reference`` reads one, in the JSON
#: Schema (ECMA) dialect: ``flowengine schema app`` gives it to editors for typed settings.
#: A default ends at the first ``}`` and has no line break, as ``.*?`` above reads it.
WHOLE_REFERENCE_PATTERN = r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}\n]*)?\}$"


@dataclass(frozen=True)
class WholeReference:
    """A value that was exactly one reference: the variable, and the text it gave."""

    name: str
    text: str
    defaulted: bool  # the variable is unset or empty, so the text is the reference's default

    def mismatch(self, path: tuple, expected: str) -> str:
        shown = _shown(self.text)
        source = f"is not set and its default is {shown}" if self.defaulted else f"is {shown}"
        return f"environment variable '{self.name}' {source}; {'.'.join(map(str, path))} expects {expected}"


def substitute(
    document: Document, environ: Mapping[str, str], wholes: dict[tuple, WholeReference] | None = None
) -> list[SpecError]:
    """Replace references in every string of ``document.data``; return what was missing.

    ``wholes``, when given, receives each value that was exactly one (resolved) reference,
    by its path, for ``convert``.
    """
    substitution = _Substitution(document, environ, {} if wholes is None else wholes)
    document.data = substitution.walk(document.data, ())
    return substitution.problems


def convert(
    document: Document, wholes: Mapping[tuple, WholeReference], validator: jsonschema.protocols.Validator
) -> dict[tuple, SpecError]:
    """Turn each whole reference whose text the schema refuses into the type it wants there.

    Returns, by path, the values that do not convert: the caller leaves those paths out of
    its own schema check, whose message would repeat the problem less precisely.
    """
    problems: dict[tuple, SpecError] = {}
    for error in list(validator.iter_errors(document.data)):  # listed first: converting changes the data
        path, kinds = tuple(error.absolute_path), _kinds(error)
        whole = wholes.get(path)
        if whole is None or not kinds or path in problems:
            continue
        value = _converted(whole.text, kinds)
        if value is None:
            problems[path] = SpecError(document.value_where(*path), whole.mismatch(path, _expected(error, kinds)))
        else:
            _put(document.data, path, value)
    return problems


class _Substitution:
    """One pass over a document: the references it replaced and what it found missing."""

    def __init__(self, document: Document, environ: Mapping[str, str], wholes: dict[tuple, WholeReference]) -> None:
        self.document, self.environ, self.wholes = document, environ, wholes
        self.problems: list[SpecError] = []

    def walk(self, value: Any, path: tuple) -> Any:
        if isinstance(value, dict):
            return {k: self.walk(v, path + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.walk(v, path + (i,)) for i, v in enumerate(value)]
        if isinstance(value, str) and "$" in value:
            return self.expand(value, path)
        return value

    def expand(self, text: str, path: tuple) -> str:
        expanded = _REFERENCE.sub(lambda match: self.replace(match, path), text)
        whole = _whole_reference(text)
        if whole and (whole[1] in self.environ or whole[2] is not None):  # an unset one is reported already
            self.wholes[path] = WholeReference(whole[1], expanded, defaulted=whole[2] is not None and not self.environ.get(whole[1]))
        return expanded

    def replace(self, match: re.Match[str], path: tuple) -> str:
        reference, name, default = match.group(0, 1, 2)
        if reference == "$$":
            return "$"
        if name is None:
            message = f"'{reference}' is not a variable reference; write ${{NAME}} or ${{NAME:-default}} ($$ for a dollar sign)"
        elif default is not None:  # as in the shell, ``:-`` also stands in for a set but empty variable
            return self.environ.get(name) or default
        elif name in self.environ:
            return self.environ[name]
        else:
            message = f"environment variable '{name}' is not set (set it, or give a default: ${{{name}:-value}})"
        self.problems.append(SpecError(self.document.value_where(*path), message))
        return ""


def _whole_reference(text: str) -> re.Match[str] | None:
    """The variable reference that is all of ``text``, read as ``sub()`` reads it, if there is one."""
    match = _REFERENCE.match(text)
    return match if match and match[1] and match.end() == len(text) else None


def _kinds(error: jsonschema.ValidationError) -> list[str]:
    """The types other than text that the failing schema takes: its own, or its branches'."""
    if error.validator == "type":
        expected = error.validator_value
        return [kind for kind in ([expected] if isinstance(expected, str) else expected) if kind in _CONVERSIONS]
    return [kind for branch in error.context or () if not branch.path for kind in _kinds(branch)]


def _expected(error: jsonschema.ValidationError, kinds: list[str]) -> str:
    """A choice of shapes in the schema's own words (as its messages say it), else the types."""
    described = error.schema.get("description") if error.validator in ("oneOf", "anyOf") else None
    return described or " or ".join(_CONVERSIONS[kind][1] for kind in dict.fromkeys(kinds))


def _converted(text: str, kinds: list[str]) -> Any:
    """``text`` as the first of ``kinds`` it spells, else None."""
    for kind in kinds:
        value = _CONVERSIONS[kind][0](text)
        if value is not None:
            return value
    return None


#: ASCII digits only (``int()`` takes any script's); 18 of them fit any setting and keep
#: ``int()`` from refusing or working hard on a huge value.
_INTEGER = re.compile(r"[-+]?[0-9]{1,18}")
_DECIMAL = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
#: The spellings environments use for a switch. yes/no/on/off are refused: YAML 1.1 reading
#: them as booleans is a known trap, and a strict set makes a typo ("ture") an error, not false.
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _integer(text: str) -> int | None:
    return int(text) if _INTEGER.fullmatch(text) else None


def _number(text: str) -> int | float | None:
    """``12`` stays an integer, as YAML reads it; ``0.5`` and ``1e3`` are floats; inf and nan are refused."""
    if _INTEGER.fullmatch(text):
        return int(text)
    if not _DECIMAL.fullmatch(text):
        return None
    number = float(text)
    return number if math.isfinite(number) else None


def _boolean(text: str) -> bool | None:
    return _BOOLEANS.get(text.lower())


#: Each type a whole reference may become: how its text converts, and how an error names it.
_CONVERSIONS: dict[str, tuple[Callable[[str], Any], str]] = {
    "integer": (_integer, "an integer"),
    "number": (_number, "a number"),
    "boolean": (_boolean, "true or false (also 1 or 0)"),
}
#: The schema types a whole reference may become.
CONVERTIBLE_TYPES = frozenset(_CONVERSIONS)


def _put(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _shown(text: str) -> str:
    """Short text is quoted; a long value may be a secret wired to the wrong setting: only its length is told."""
    return repr(text) if len(text) <= 16 else f"a {len(text)}-character value"
