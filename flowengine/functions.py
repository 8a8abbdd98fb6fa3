"""The expression function library: the functions a builder calls in expressions.

Every function is a plain Python function registered in ``FUNCTIONS`` under its upper-case
name (and any aliases) by ``@function``. The evaluator calls it with already-evaluated,
JSON-like positional arguments (None, bool, int, float, str, list, dict; dates are ISO-8601
text in UTC). A bad argument raises ``TypeError``/``ValueError`` with a message written for a
builder; the evaluator adds the flow, node and expression. Nothing here builds text longer
than ``MAX_TEXT`` characters or a list longer than ``MAX_LIST`` items, and no number grows
beyond the float range (the sandbox bounds).

Docstrings say what each function returns, in the builder's words: the docs render them.
"""

from __future__ import annotations

import calendar
import json
import math
import re
import secrets
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any, Callable, TypeVar

import phonenumbers

from flowengine import hashing
from flowengine.phones import phone

MAX_TEXT = 100_000  #: the longest text an expression may build, in characters
MAX_LIST = 10_000  #: the longest list an expression may build, in items
_MAX_INT_BITS = 1023  #: whole numbers stay within the float range (about 1.8e308)
_SAFE_INT = 2**53 - 1  #: the largest whole number a JavaScript client reads exactly

FUNCTIONS: dict[str, Callable[..., Any]] = {}

F = TypeVar("F", bound=Callable[..., Any])


def function(name: str, *aliases: str, blocking: bool = False) -> Callable[[F], F]:
    """Register a function under ``name`` and its aliases.

    ``blocking=True`` marks one that does blocking work (bcrypt): the interpreter then
    evaluates the whole expression in a worker thread.
    """

    names = (name, *aliases)
    for key in names:
        if not key.isupper() or not key.isidentifier():
            raise ValueError(f"Function names are upper-case identifiers, got {key!r}")

    def register(fn: F) -> F:
        taken = [key for key in names if key in FUNCTIONS]
        if taken:
            raise ValueError(f"Function {', '.join(taken)} is already registered")
        fn.blocking = blocking  # type: ignore[attr-defined]
        FUNCTIONS.update(dict.fromkeys(names, fn))
        return fn

    return register


# --- Describing and checking values ---------------------------------------------------------


def describe(value: Any) -> str:
    """A value as a builder reads it in an error message: text 'abc', number 3, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        return "a number too large to show"
    if isinstance(value, (int, float)):
        return f"number {text_of(value)}"
    if isinstance(value, str):
        return f"text '{value[:40]}…'" if len(value) > 40 else f"text '{value}'"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__} value"


def text_of(value: Any) -> str:
    """The text of a value, as ``+`` concatenation, templates and TOTEXT show it."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
        raise ValueError("The number is too large to show as text")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    else:
        text = str(value)
    _cap_text("The text", len(text))
    return text


def _cap_text(name: str, size: int) -> None:
    if size > MAX_TEXT:
        raise ValueError(f"{name} would be {size:,} characters long; the limit is {MAX_TEXT:,}")


def _cap_list(name: str, size: int) -> None:
    if size > MAX_LIST:
        raise ValueError(f"{name} would make a list of more than {MAX_LIST:,} items")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(name: str, value: Any) -> int | float:
    if not _is_number(value):
        raise TypeError(f"{name} expects a number, got {describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} expects a finite number, got {value}")
    return value


def _whole(name: str, value: Any) -> int:
    number = _number(name, value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"{name} expects a whole number, got {describe(value)}")
        return int(number)
    return number


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} expects text, got {describe(value)}")
    return value


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{name} expects a list, got {describe(value)}")
    return value


def _numbers(name: str, args: tuple[Any, ...]) -> list[int | float]:
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else list(args)
    if not items:
        raise ValueError(f"{name} needs at least one number")
    return [_number(name, item) for item in items]


def _checked(name: str, result: int | float) -> int | float:
    if (isinstance(result, int) and result.bit_length() > _MAX_INT_BITS) or (
        isinstance(result, float) and not math.isfinite(result)
    ):
        raise ValueError(f"{name} result is too large")
    return result


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _truthy(value: Any) -> bool:
    """False, null, 0, '' and empty lists or objects count as false; everything else as true."""
    return bool(value)


# --- Logic ----------------------------------------------------------------------------------


@function("IF")
def if_(condition: Any, then: Any, otherwise: Any = None) -> Any:
    """``then`` when the condition is true, else ``otherwise`` (null when left out)."""
    return then if _truthy(condition) else otherwise


@function("AND")
def and_(*values: Any) -> bool:
    """True when every value is true: AND(a, b, ...)."""
    if not values:
        raise ValueError("AND needs at least one value")
    return all(_truthy(value) for value in values)


@function("OR")
def or_(*values: Any) -> bool:
    """True when at least one value is true: OR(a, b, ...)."""
    if not values:
        raise ValueError("OR needs at least one value")
    return any(_truthy(value) for value in values)


@function("NOT")
def not_(value: Any) -> bool:
    """True when the value is false, false when it is true."""
    return not _truthy(value)


@function("COALESCE")
def coalesce(*values: Any) -> Any:
    """The first value that is not null (null when all are)."""
    return next((value for value in values if value is not None), None)


# --- Type checks and validation ------------------------------------------------------------


@function("ISEMPTY")
def isempty(value: Any) -> bool:
    """True for null, empty text '', an empty list [] or an empty object {}."""
    return value is None or (isinstance(value, (str, list, dict)) and not value)


@function("EXISTS")
def exists(value: Any) -> bool:
    """True when the value is not null (a missing field is null)."""
    return value is not None


@function("ISNUMBER")
def isnumber(value: Any) -> bool:
    """True when the value is a number (not text that looks like one)."""
    return _is_number(value)


@function("ISTEXT")
def istext(value: Any) -> bool:
    """True when the value is text."""
    return isinstance(value, str)


@function("ISBOOLEAN")
def isboolean(value: Any) -> bool:
    """True when the value is true or false."""
    return isinstance(value, bool)


@function("ISLIST")
def islist(value: Any) -> bool:
    """True when the value is a list."""
    return isinstance(value, list)


@function("ISOBJECT")
def isobject(value: Any) -> bool:
    """True when the value is an object (a set of named fields)."""
    return isinstance(value, dict)


_EMAIL_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


@function("ISEMAIL")
def isemail(value: Any) -> bool:
    """True for an address like 'ada@example.com'.

    The everyday form of RFC 5322: dot-separated ASCII atoms, '@', a domain of at least two
    labels whose last is not all digits; at most 64 characters before '@' and 254 in all.
    Quoted local parts, comments and IP-address domains are refused.
    """
    if not isinstance(value, str) or len(value) > 254 or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    labels = domain.split(".")
    return (
        len(local) <= 64
        and all(_EMAIL_ATOM.fullmatch(atom) for atom in local.split("."))
        and len(labels) >= 2
        and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _regions(value: Any) -> set[str]:
    codes = value if isinstance(value, list) else [value]
    known = phonenumbers.SUPPORTED_REGIONS
    if not codes or not all(isinstance(code, str) and code.upper() in known for code in codes):
        raise ValueError(
            "ISMOBILEPHONE region must be a country code like 'US' or a list of them, "
            f"got {describe(value)}"
        )
    return {code.upper() for code in codes}


@function("ISMOBILEPHONE")
def ismobilephone(value: Any, region: Any = None) -> bool:
    """True when the text is a valid mobile number in E.164 form, like '+14155552671'.

    Checked against libphonenumber's numbering plans: the number must be valid and of a
    mobile type (where a country cannot tell mobile from landline, as in the US, both
    count). Spaces, dashes and national forms are refused, so a number has one spelling.
    With ``region`` (a country code like 'GB', or a list of them) the number must also
    belong to that country.
    """
    regions = None if region is None else _regions(region)
    if not isinstance(value, str) or not _E164.fullmatch(value):
        return False
    facts = phone(value)  # None: e.g. no such country code
    return facts is not None and facts.mobile and (regions is None or facts.country in regions)


_MAX_COST = 16  #: a check at cost 16 already takes seconds; higher costs only stall a worker


@function("ECOMPARE", blocking=True)
def ecompare(plain: Any, encrypted: Any) -> bool:
    """True when the plain text matches the encrypted (bcrypt-hashed) value, like a password.

    Never fails and never shows the hash. Every answer costs one bcrypt check of the same
    cost as a real one: a missing or malformed hash, a value that is not text, or a password
    the hash cannot hold (over 128 characters, or over 72 bytes in UTF-8 for a bare bcrypt
    hash) gives false only after a check. A sign-in for an unknown email, or with a very long
    password, then takes as long as a wrong password, so the time of an answer does not tell
    which emails have accounts. A hash with a cost above 16, which would tie up the server,
    is refused outright. Both stored forms match: the engine's own (``$fe1$2b$...``, see
    ``flowengine/hashing.py``) and bare bcrypt (``$2a$``, ``$2b$``, ``$2y$``).
    """
    from flowengine.models import Encrypted  # a sealed field read by a data node

    if isinstance(encrypted, Encrypted):
        return encrypted.matches(plain)
    found = hashing.cost(encrypted)
    if found is not None and found > _MAX_COST:
        return False
    return hashing.matches(plain, encrypted)


# --- Text -----------------------------------------------------------------------------------


@function("CONCAT")
def concat(*values: Any) -> str:
    """All values joined as text: CONCAT('a', 1, true) is 'a1true'; null adds nothing."""
    parts = [text_of(value) for value in values]
    _cap_text("CONCAT result", sum(len(part) for part in parts))
    return "".join(parts)


@function("REPEAT")
def repeat(text: Any, times: Any) -> str:
    """The text repeated: REPEAT('ab', 3) is 'ababab'."""
    text, times = _text("REPEAT", text), _whole("REPEAT", times)
    if times < 0:
        raise ValueError(f"REPEAT count must be 0 or more, got {times}")
    _cap_text("REPEAT result", len(text) * times)
    return text * times


@function("LOWER", "TOLOWER")
def lower(text: Any) -> str:
    """The text in lower case."""
    return _text("LOWER", text).lower()


@function("UPPER", "TOUPPER")
def upper(text: Any) -> str:
    """The text in upper case."""
    return _text("UPPER", text).upper()


@function("TRIM")
def trim(text: Any) -> str:
    """The text without spaces (and other white space) at its start and end."""
    return _text("TRIM", text).strip()


@function("LEN", "LENGTH")
def length(value: Any) -> int:
    """The number of characters in a text, or of items in a list."""
    if not isinstance(value, (str, list)):
        raise TypeError(f"LEN expects text or a list, got {describe(value)}")
    return len(value)


@function("SIZE")
def size(value: Any) -> int:
    """The number of items in a list, or of fields in an object: SIZE([4, 5]) is 2."""
    if not isinstance(value, (list, dict)):
        raise TypeError(f"SIZE expects a list or an object, got {describe(value)}")
    return len(value)


@function("INCLUDES")
def includes(container: Any, item: Any) -> bool:
    """True when the text contains the given text, or the list contains the given value."""
    if isinstance(container, list):
        return in_(item, container)
    if not isinstance(container, str):
        raise TypeError(f"INCLUDES expects text or a list to look in, got {describe(container)}")
    return _text("INCLUDES", item) in container


@function("IN")
def in_(value: Any, items: Any) -> bool:
    """True when the value is one of the list's items: IN('b', ['a', 'b']) is true."""
    return any(_same(value, item) for item in _list("IN", items))


@function("STARTSWITH")
def startswith(text: Any, start: Any) -> bool:
    """True when the text begins with the given text."""
    return _text("STARTSWITH", text).startswith(_text("STARTSWITH", start))


@function("ENDSWITH")
def endswith(text: Any, end: Any) -> bool:
    """True when the text ends with the given text."""
    return _text("ENDSWITH", text).endswith(_text("ENDSWITH", end))


@function("REPLACE")
def replace(text: Any, old: Any, new: Any) -> str:
    """The text with every occurrence of ``old`` replaced by ``new``."""
    text, old, new = _text("REPLACE", text), _text("REPLACE", old), _text("REPLACE", new)
    if not old:
        raise ValueError("REPLACE needs some text to look for, got empty text ''")
    _cap_text("REPLACE result", len(text) + text.count(old) * (len(new) - len(old)))
    return text.replace(old, new)


@function("SUBSTRING")
def substring(text: Any, start: Any, count: Any = None) -> str:
    """Part of the text: ``count`` characters from position ``start`` (the first is 0).

    Without a count, the rest of the text: SUBSTRING('flowengine', 4) is 'engine'.
    """
    text, start = _text("SUBSTRING", text), _whole("SUBSTRING", start)
    if start < 0:
        raise ValueError(f"SUBSTRING start must be 0 or more, got {start}")
    if count is None:
        return text[start:]
    count = _whole("SUBSTRING", count)
    if count < 0:
        raise ValueError(f"SUBSTRING length must be 0 or more, got {count}")
    return text[start : start + count]


@function("SPLIT")
def split(text: Any, separator: Any) -> list[str]:
    """The list of pieces between separators: SPLIT('a,b', ',') is ['a', 'b'].

    An empty separator splits into single characters.
    """
    text, separator = _text("SPLIT", text), _text("SPLIT", separator)
    pieces = text.split(separator, MAX_LIST) if separator else list(text[: MAX_LIST + 1])
    _cap_list("SPLIT", len(pieces))
    return pieces


@function("JOIN")
def join(items: Any, separator: Any) -> str:
    """The list's items as one text with the separator between: JOIN(['a', 'b'], '-') is 'a-b'."""
    parts = [text_of(item) for item in _list("JOIN", items)]
    separator = _text("JOIN", separator)
    _cap_text("JOIN result", sum(map(len, parts)) + len(separator) * max(len(parts) - 1, 0))
    return separator.join(parts)


# --- Conversion -----------------------------------------------------------------------------

_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


@function("TOTEXT")
def totext(value: Any) -> str:
    """The value as text: null is '', true is 'true', 2.0 is '2', lists and objects as JSON."""
    return text_of(value)


@function("TONUMBER")
def tonumber(value: Any) -> int | float:
    """The number a text spells: TONUMBER('42') is 42, TONUMBER('2.5') is 2.5.

    Numbers come back unchanged; true is 1 and false is 0.
    """
    return _to_number("TONUMBER", value)


@function("TOINTEGER")
def tointeger(value: Any) -> int:
    """The whole number of a number or text, dropping any fraction: TOINTEGER('3.7') is 3."""
    return int(_to_number("TOINTEGER", value))


def _to_number(name: str, value: Any) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if _is_number(value):
        return _number(name, value)
    text = _text(name, value).strip()
    if len(text) > 400 or not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError(
            f"{name} expects text that is a number, like '42' or '2.5', got {describe(value)}"
        )
    return _checked(name, int(text) if _INTEGER_TEXT.fullmatch(text) else float(text))


_TRUE_TEXT = {"true", "yes", "1", "on"}
_FALSE_TEXT = {"false", "no", "0", "off", ""}


@function("TOBOOLEAN")
def toboolean(value: Any) -> bool:
    """True or false: text 'true'/'yes'/'1'/'on' is true, 'false'/'no'/'0'/'off'/'' is false.

    Numbers are true unless 0; null is false.
    """
    if value is None or isinstance(value, bool):
        return bool(value)
    if _is_number(value):
        return value != 0
    word = _text("TOBOOLEAN", value).strip().lower()
    if word not in _TRUE_TEXT | _FALSE_TEXT:
        raise ValueError(f"TOBOOLEAN expects text like 'true' or 'false', got {describe(value)}")
    return word in _TRUE_TEXT


# --- Math -----------------------------------------------------------------------------------


@function("ROUND")
def round_(number: Any, digits: Any = 0) -> int | float:
    """The number rounded to ``digits`` decimals, halves away from zero (as in Excel).

    ROUND(2.5) is 3, ROUND(-2.5) is -3, ROUND(2.675, 2) is 2.68, ROUND(1250, -2) is 1300.
    """
    number, digits = _number("ROUND", number), _whole("ROUND", digits)
    if not -308 <= digits <= 308:
        raise ValueError(f"ROUND digits must be between -308 and 308, got {digits}")
    if isinstance(number, int):
        if digits >= 0:
            return number
        step = 10**-digits
        return (1 if number >= 0 else -1) * ((abs(number) + step // 2) // step * step)
    with localcontext() as context:
        context.prec = 1000
        rounded = Decimal(repr(number)).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)
    return int(rounded) if digits <= 0 else float(rounded)


@function("FLOOR")
def floor(number: Any) -> int:
    """The largest whole number not above the number: FLOOR(2.7) is 2, FLOOR(-2.2) is -3."""
    return math.floor(_number("FLOOR", number))


@function("CEIL")
def ceil(number: Any) -> int:
    """The smallest whole number not below the number: CEIL(2.2) is 3, CEIL(-2.7) is -2."""
    return math.ceil(_number("CEIL", number))


@function("ABS")
def abs_(number: Any) -> int | float:
    """The number without its sign: ABS(-3) is 3."""
    return abs(_number("ABS", number))


@function("MOD")
def mod(number: Any, divisor: Any) -> int | float:
    """The remainder after dividing, with the divisor's sign (as in Excel): MOD(7, 3) is 1."""
    number, divisor = _number("MOD", number), _number("MOD", divisor)
    if divisor == 0:
        raise ValueError("MOD cannot divide by zero")
    return number % divisor


@function("MIN")
def min_(*numbers: Any) -> int | float:
    """The smallest of the numbers: MIN(3, 1, 2) or MIN([3, 1, 2]) is 1."""
    return min(_numbers("MIN", numbers))


@function("MAX")
def max_(*numbers: Any) -> int | float:
    """The largest of the numbers: MAX(3, 1, 2) or MAX([3, 1, 2]) is 3."""
    return max(_numbers("MAX", numbers))


@function("SUM")
def sum_(*numbers: Any) -> int | float:
    """The numbers added up: SUM(1, 2, 3) or SUM([1, 2, 3]) is 6; an empty list gives 0."""
    if not numbers or numbers == ([],):
        return 0
    return _checked("SUM", sum(_numbers("SUM", numbers)))


@function("AVERAGE")
def average(*numbers: Any) -> float:
    """The mean of the numbers: AVERAGE(1, 2, 6) or AVERAGE([1, 2, 6]) is 3."""
    values = _numbers("AVERAGE", numbers)
    return _checked("AVERAGE", sum(values)) / len(values)


@function("PRODUCT")
def product(*numbers: Any) -> int | float:
    """The numbers multiplied: PRODUCT(2, 3, 4) is 24 (2 to 100 numbers, or one list)."""
    if not (len(numbers) == 1 and isinstance(numbers[0], list)) and not 2 <= len(numbers) <= 100:
        raise ValueError(f"PRODUCT takes 2 to 100 numbers (or one list), got {len(numbers)}")
    result: int | float = 1
    for number in _numbers("PRODUCT", numbers):
        result = _checked("PRODUCT", result * number)
    return result


@function("RANDBETWEEN")
def randbetween(low: Any, high: Any) -> int:
    """A random whole number from ``low`` to ``high``, both included, from a secure source.

    Good for one-time codes: RANDBETWEEN(100000, 999999) is a 6-digit code.
    """
    low, high = _whole("RANDBETWEEN", low), _whole("RANDBETWEEN", high)
    if not -_SAFE_INT <= low <= high <= _SAFE_INT:
        raise ValueError(
            f"RANDBETWEEN needs low <= high, both between {-_SAFE_INT} and {_SAFE_INT}, "
            f"got {low} and {high}"
        )
    return low + secrets.randbelow(high - low + 1)


@function("UUID")
def uuid_() -> str:
    """A new random unique id, like '0f8fad5b-d9cb-469f-a165-70867728950e'."""
    return str(uuid.uuid4())


# --- Dates ----------------------------------------------------------------------------------

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
_UNIT_MONTHS = {"month": 1, "year": 12}
_UNITS = "seconds, minutes, hours, days, weeks, months or years"


def _utcnow() -> datetime:
    """The current time (tests replace it)."""
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    """A UTC moment as text: '2026-11-26T18:53:05.123Z'."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date(name: str, value: Any) -> tuple[datetime, bool]:
    """The moment a date text names, in UTC, and whether the text was a date alone."""
    if isinstance(value, str) and len(value) <= 40:
        try:
            if len(value) <= 10:
                day = date.fromisoformat(value)
                return datetime(day.year, day.month, day.day, tzinfo=timezone.utc), True
            moment = datetime.fromisoformat(value)
            return moment.replace(tzinfo=moment.tzinfo or timezone.utc).astimezone(timezone.utc), False
        except ValueError:
            pass
    raise ValueError(
        f"{name} expects a date like '2026-11-26' or '2026-11-26T18:53:05.123Z', got {describe(value)}"
    )


def _unit(name: str, value: Any) -> str:
    unit = _text(name, value).strip().lower().removesuffix("s")
    if unit not in _UNIT_SECONDS and unit not in _UNIT_MONTHS:
        raise ValueError(f"{name} unit must be {_UNITS}, got {describe(value)}")
    return unit


def _add_months(moment: datetime, months: int) -> datetime:
    year, month = divmod(moment.month - 1 + months, 12)
    year += moment.year
    if not 1 <= year <= 9999:
        raise OverflowError
    last_day = calendar.monthrange(year, month + 1)[1]
    return moment.replace(year=year, month=month + 1, day=min(moment.day, last_day))


@function("NOW")
def now() -> str:
    """The current date and time in UTC, like '2026-11-26T18:53:05.123Z'."""
    return _iso(_utcnow())


@function("TODAY")
def today() -> str:
    """Today's date in UTC, like '2026-11-26'."""
    return _utcnow().date().isoformat()


@function("DATEADD")
def dateadd(moment: Any, amount: Any, unit: Any = "days") -> str:
    """The date moved by ``amount`` units (negative goes back): DATEADD(NOW(), 5) is in 5 days.

    Units: seconds, minutes, hours, days (the default), weeks, months, years. Adding months
    keeps the day where it can (January 31 plus one month is the last day of February). A
    date alone ('2026-11-26') gives a date alone unless the result has a time of day.
    """
    start, date_only = _date("DATEADD", moment)
    amount, unit = _number("DATEADD", amount), _unit("DATEADD", unit)
    try:
        if unit in _UNIT_MONTHS:
            result = _add_months(start, _whole("DATEADD", amount) * _UNIT_MONTHS[unit])
        else:
            result = start + timedelta(seconds=amount * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError("DATEADD result is out of range (years 1 to 9999)") from None
    if date_only and result.time() == datetime.min.time():
        return result.date().isoformat()
    return _iso(result)


def _months_between(start: datetime, end: datetime) -> int:
    """Whole calendar months from start to end, toward zero."""
    months = (end.year - start.year) * 12 + end.month - start.month
    start_rest, end_rest = (start.day, start.time()), (end.day, end.time())
    if months > 0 and end_rest < start_rest:
        return months - 1
    if months < 0 and end_rest > start_rest:
        return months + 1
    return months


@function("DATEDIFF")
def datediff(start: Any, end: Any, unit: Any = "days") -> int:
    """How many whole units from ``start`` to ``end`` (negative when ``end`` is earlier).

    DATEDIFF('2026-01-01', '2026-01-31') is 30; partial units are dropped, toward zero.
    """
    first, _ = _date("DATEDIFF", start)
    last, _ = _date("DATEDIFF", end)
    unit = _unit("DATEDIFF", unit)
    if unit in _UNIT_MONTHS:
        amount, per = _months_between(first, last), _UNIT_MONTHS[unit]
    else:
        amount, per = (last - first) // timedelta(microseconds=1), _UNIT_SECONDS[unit] * 1_000_000
    return abs(amount) // per * (1 if amount >= 0 else -1)
