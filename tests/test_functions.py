"""The expression function library, called directly through FUNCTIONS.

The evaluator (tests/test_expressions.py) covers syntax, operators and the sandbox; here each
function's meaning, its edge cases and the exact message a builder reads.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

import bcrypt
import pytest

from flowengine import functions
from flowengine.functions import FUNCTIONS, MAX_LIST, MAX_TEXT, describe, function, text_of


def call(name, *args):
    return FUNCTIONS[name](*args)


def fails(name, *args, error=ValueError, message):
    with pytest.raises(error) as info:
        call(name, *args)
    assert str(info.value) == message


# --- Registration ---------------------------------------------------------------------------


def test_aliases_are_the_same_function():
    assert FUNCTIONS["LOWER"] is FUNCTIONS["TOLOWER"]
    assert FUNCTIONS["UPPER"] is FUNCTIONS["TOUPPER"]
    assert FUNCTIONS["LEN"] is FUNCTIONS["LENGTH"]


def test_only_ecompare_is_blocking():
    assert [name for name, fn in FUNCTIONS.items() if fn.blocking] == ["ECOMPARE"]


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="Function LOWER is already registered"):
        function("LOWER")(lambda text: text)


def test_names_must_be_upper_case():
    with pytest.raises(ValueError, match="Function names are upper-case identifiers, got 'lower2'"):
        function("LOWER2", "lower2")
    assert "LOWER2" not in FUNCTIONS


def test_a_taken_alias_registers_nothing():
    with pytest.raises(ValueError, match="Function TOUPPER is already registered"):
        function("SHOUT", "TOUPPER")(lambda text: text)
    assert "SHOUT" not in FUNCTIONS


def test_every_function_has_a_docstring():
    assert all(fn.__doc__ for fn in FUNCTIONS.values())


# --- text_of / describe ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        (None, ""),
        ("abc", "abc"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (2.0, "2"),
        (-0.0, "0"),
        (2.5, "2.5"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        ([1, "a", None, True], '[1,"a",null,true]'),
        ({"name": "Ada", "ü": 1}, '{"name":"Ada","ü":1}'),
    ],
)
def test_text_of(value, text):
    assert text_of(value) == text
    assert call("TOTEXT", value) == text


def test_text_of_a_huge_number_is_refused():
    with pytest.raises(ValueError, match="^The number is too large to show as text$"):
        text_of(10**5000)
    assert describe(10**5000) == "a number too large to show"


def test_text_of_a_huge_list_is_refused():
    with pytest.raises(ValueError, match="^The text would be 100,001 characters long; the limit is 100,000$"):
        text_of(["a" * 50_000, "b" * 49_994])  # '["' a… '","' b… '"]'
    assert len(text_of(["a" * 50_000, "b" * 49_993])) == MAX_TEXT


@pytest.mark.parametrize(
    "value, words",
    [
        (None, "null"),
        (True, "boolean true"),
        (3, "number 3"),
        (2.5, "number 2.5"),
        ("abc", "text 'abc'"),
        ("x" * 50, "text '" + "x" * 40 + "…'"),
        ([1], "a list of 1 item"),
        ([1, 2], "a list of 2 items"),
        ({}, "an object"),
    ],
)
def test_describe(value, words):
    assert describe(value) == words


# --- Logic ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, result",
    [
        ((True, "a", "b"), "a"),
        ((False, "a", "b"), "b"),
        ((0, "a", "b"), "b"),
        ((1, "a", "b"), "a"),
        (("", "a", "b"), "b"),
        (([], "a", "b"), "b"),
        ((None, "a", "b"), "b"),
        (("no", "a", "b"), "a"),
        ((False, "a"), None),
    ],
)
def test_if(args, result):
    assert call("IF", *args) == result


def test_and_or_not():
    assert call("AND", True, 1, "x") is True
    assert call("AND", True, 0) is False
    assert call("OR", False, None, "x") is True
    assert call("OR", False, 0, "") is False
    assert call("NOT", 0) is True
    assert call("NOT", "x") is False
    fails("AND", message="AND needs at least one value")
    fails("OR", message="OR needs at least one value")


def test_coalesce():
    assert call("COALESCE", None, "", "b") == ""
    assert call("COALESCE", None, None, 0) == 0
    assert call("COALESCE", None) is None
    assert call("COALESCE") is None


# --- Type checks ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", [], {}])
def test_isempty_true(value):
    assert call("ISEMPTY", value) is True


@pytest.mark.parametrize("value", [" ", "a", 0, False, [None], {"a": None}])
def test_isempty_false(value):
    assert call("ISEMPTY", value) is False


def test_exists():
    assert call("EXISTS", None) is False
    assert all(call("EXISTS", value) for value in (0, False, "", [], {}))


@pytest.mark.parametrize(
    "name, yes, no",
    [
        ("ISNUMBER", [0, -3, 2.5], ["3", True, None, [1]]),
        ("ISTEXT", ["", "a"], [1, None, ["a"]]),
        ("ISBOOLEAN", [True, False], [0, 1, "true", None]),
        ("ISLIST", [[], [1]], [{}, "a", None]),
        ("ISOBJECT", [{}, {"a": 1}], [[], "a", None]),
    ],
)
def test_type_checks(name, yes, no):
    assert [call(name, value) for value in yes] == [True] * len(yes)
    assert [call(name, value) for value in no] == [False] * len(no)


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "ada.lovelace+flows@mail.example.co.uk",
        "o'brien@example.ie",
        "x@a-b.io",
        "user_1@xn--bcher-kva.example",
        "a" * 64 + "@example.com",
    ],
)
def test_isemail_accepts(address):
    assert call("ISEMAIL", address) is True


@pytest.mark.parametrize(
    "address",
    [
        "",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "a@b@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "ada..l@example.com",
        "ada lovelace@example.com",
        '"ada"@example.com',
        "ada@-example.com",
        "ada@example-.com",
        "ada@example..com",
        "ada@1.2.3.4",
        "ada@[127.0.0.1]",
        "adä@example.com",
        "a" * 65 + "@example.com",
        "ada@" + "a" * 250 + ".com",
        None,
        42,
        ["ada@example.com"],
    ],
)
def test_isemail_refuses(address):
    assert call("ISEMAIL", address) is False


def test_isemail_is_fast_on_hostile_input():
    # No backtracking: a long run of atom characters and dots is checked in linear time.
    assert call("ISEMAIL", ("a." * 30 + "!") + "@" + "a-" * 60 + ".com") is False
    assert call("ISEMAIL", "a" * 100_000) is False


# --- ISMOBILEPHONE --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+14155552671",  # US: mobile and landline share ranges (FIXED_LINE_OR_MOBILE)
        "+12015550123",
        "+447400123456",  # GB mobile
        "+905321234567",  # TR mobile (Turkcell)
        "+905051234567",  # TR mobile (Türk Telekom)
    ],
)
def test_ismobilephone_accepts_mobiles(number):
    assert call("ISMOBILEPHONE", number) is True


@pytest.mark.parametrize(
    "number",
    [
        "+442079460000",  # GB landline (London)
        "+902121234567",  # TR landline (Istanbul)
        "+903122345678",  # TR landline (Ankara)
        "+18002345678",  # US toll-free
        "+15005550006",  # US voip range
        "+4474001234",  # GB mobile, too short: not valid
        "+1415555267",  # too short
        "+999123456789",  # no such country
        "14155552671",  # not E.164: no '+'
        "+1 415 555 2671",  # not E.164: spaces
        "+1-415-555-2671",
        "+0123456789",
        "+14155552671\n",
        "",
        "phone",
        None,
        14155552671,
        ["+14155552671"],
    ],
)
def test_ismobilephone_refuses(number):
    assert call("ISMOBILEPHONE", number) is False


def test_ismobilephone_region():
    assert call("ISMOBILEPHONE", "+447400123456", "GB") is True
    assert call("ISMOBILEPHONE", "+447400123456", "gb") is True
    assert call("ISMOBILEPHONE", "+447400123456", "US") is False
    assert call("ISMOBILEPHONE", "+447911123456", "GB") is False  # Guernsey, not GB
    assert call("ISMOBILEPHONE", "+905321234567", ["US", "TR"]) is True
    assert call("ISMOBILEPHONE", "+442079460000", "GB") is False


@pytest.mark.parametrize("region", ["USA", "XX", 1, [], ["US", "XX"]])
def test_ismobilephone_bad_region(region):
    fails(
        "ISMOBILEPHONE",
        "+14155552671",
        region,
        message=f"ISMOBILEPHONE region must be a country code like 'US' or a list of them, got {describe(region)}",
    )


# --- ECOMPARE -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_hash():
    return bcrypt.hashpw("s3cret-pässword".encode(), bcrypt.gensalt(rounds=4)).decode()


def test_ecompare_matches(password_hash):
    assert call("ECOMPARE", "s3cret-pässword", password_hash) is True


def test_ecompare_other_bcrypt_prefixes(password_hash):
    assert call("ECOMPARE", "s3cret-pässword", "$2a$" + password_hash[4:]) is True
    assert call("ECOMPARE", "s3cret-pässword", "$2y$" + password_hash[4:]) is True


@pytest.mark.parametrize("plain", ["wrong", "", "s3cret-password", "S3cret-pässword", "s3cret-pässword ", None, 1, ["s3cret-pässword"]])
def test_ecompare_wrong_password(password_hash, plain):
    assert call("ECOMPARE", plain, password_hash) is False


def test_ecompare_malformed_hashes(password_hash):
    malformed = [
        None,
        "",
        "s3cret-pässword",  # a plain text stored by mistake
        password_hash[:-1],
        password_hash + "x",
        password_hash[:-1] + "!",
        "$2c$" + password_hash[4:],
        "$2b$99$" + password_hash[7:],
        "$2b$31$" + password_hash[7:],  # valid shape, but a cost that would stall a worker
        "$2b$04$" + "é" * 53,
        "x" * 60,
        b"bytes",
        {"hash": password_hash},
    ]
    assert [call("ECOMPARE", "s3cret-pässword", value) for value in malformed] == [False] * len(malformed)


def test_ecompare_over_72_bytes_is_false_not_an_error():
    long_password = "€" * 25  # 75 bytes in UTF-8
    truncated = long_password.encode()[:72]
    hash_of_prefix = bcrypt.hashpw(truncated, bcrypt.gensalt(rounds=4)).decode()
    assert call("ECOMPARE", long_password, hash_of_prefix) is False
    assert call("ECOMPARE", "a" * 1_000_000, hash_of_prefix) is False


def test_ecompare_72_bytes_exactly():
    password = "a" * 72
    assert call("ECOMPARE", password, bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()) is True


def test_ecompare_reads_the_engines_own_hashes_of_long_passwords():
    from flowengine.hashing import hash_secret

    password = "é" * 64  # 128 bytes: a bare bcrypt hash could not hold it
    assert call("ECOMPARE", password, hash_secret(password, 4)) is True
    assert call("ECOMPARE", "é" * 63, hash_secret(password, 4)) is False


def test_ecompare_nul_and_bad_unicode(password_hash):
    prefix_hash = bcrypt.hashpw(b"sec", bcrypt.gensalt(rounds=4)).decode()
    assert call("ECOMPARE", "sec\0ret", prefix_hash) is False
    assert call("ECOMPARE", "\ud800", password_hash) is False


# --- RANDBETWEEN, UUID ----------------------------------------------------------------------


def test_randbetween_is_inclusive_and_in_range():
    draws = [call("RANDBETWEEN", 1, 3) for _ in range(600)]
    assert set(draws) == {1, 2, 3}
    assert all(isinstance(draw, int) for draw in draws)


def test_randbetween_six_digit_codes():
    codes = [call("RANDBETWEEN", 100000, 999999) for _ in range(200)]
    assert all(100000 <= code <= 999999 for code in codes)
    assert len(set(codes)) > 190


def test_randbetween_single_value_and_negatives():
    assert call("RANDBETWEEN", 5, 5) == 5
    assert set(call("RANDBETWEEN", -1, 0) for _ in range(200)) == {-1, 0}
    assert call("RANDBETWEEN", 2.0, 2.0) == 2


def test_randbetween_uses_secrets(monkeypatch):
    seen = []

    def randbelow(n):
        seen.append(n)
        return n - 1

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    assert call("RANDBETWEEN", 100000, 999999) == 999999
    assert seen == [900000]


@pytest.mark.parametrize(
    "low, high, error, message",
    [
        ("1", 9, TypeError, "RANDBETWEEN expects a number, got text '1'"),
        (1, None, TypeError, "RANDBETWEEN expects a number, got null"),
        (True, 9, TypeError, "RANDBETWEEN expects a number, got boolean true"),
        (1.5, 9, ValueError, "RANDBETWEEN expects a whole number, got number 1.5"),
        (9, 1, ValueError, "RANDBETWEEN needs low <= high, both between -9007199254740991 and 9007199254740991, got 9 and 1"),
        (0, 2**53, ValueError, "RANDBETWEEN needs low <= high, both between -9007199254740991 and 9007199254740991, got 0 and 9007199254740992"),
    ],
)
def test_randbetween_errors(low, high, error, message):
    fails("RANDBETWEEN", low, high, error=error, message=message)


def test_uuid():
    first, second = call("UUID"), call("UUID")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", first)
    assert first != second


# --- Text -----------------------------------------------------------------------------------


def test_concat():
    assert call("CONCAT", "a", 1, 2.0, True, None, [1]) == "a12true[1]"
    assert call("CONCAT") == ""
    fails("CONCAT", "a" * 60_000, "b" * 40_001, message="CONCAT result would be 100,001 characters long; the limit is 100,000")
    assert len(call("CONCAT", "a" * 60_000, "b" * 40_000)) == MAX_TEXT


def test_repeat():
    assert call("REPEAT", "ab", 3) == "ababab"
    assert call("REPEAT", "ab", 0) == ""
    fails("REPEAT", "ab", 50_001, message="REPEAT result would be 100,002 characters long; the limit is 100,000")
    fails("REPEAT", "ab", -1, message="REPEAT count must be 0 or more, got -1")
    fails("REPEAT", 1, 2, error=TypeError, message="REPEAT expects text, got number 1")


def test_case_and_trim():
    assert call("LOWER", "AdA Ç") == "ada ç"
    assert call("TOLOWER", "X") == "x"
    assert call("UPPER", "ada") == call("TOUPPER", "ada") == "ADA"
    assert call("TRIM", " \t ada lovelace \n") == "ada lovelace"
    fails("LOWER", None, error=TypeError, message="LOWER expects text, got null")
    fails("UPPER", 5, error=TypeError, message="UPPER expects text, got number 5")
    fails("TRIM", ["a"], error=TypeError, message="TRIM expects text, got a list of 1 item")


def test_len_and_size():
    assert call("LEN", "añb") == 3
    assert call("LENGTH", [1, 2]) == 2
    assert call("LEN", "") == 0
    assert call("SIZE", [45, 26, 94, 73]) == 4
    assert call("SIZE", {"a": 1, "b": 2}) == 2
    fails("LEN", {"a": 1}, error=TypeError, message="LEN expects text or a list, got an object")
    fails("LEN", None, error=TypeError, message="LEN expects text or a list, got null")
    fails("SIZE", "abc", error=TypeError, message="SIZE expects a list or an object, got text 'abc'")


def test_includes_and_in():
    assert call("INCLUDES", "flowengine", "engine") is True
    assert call("INCLUDES", "flowengine", "Engine") is False
    assert call("INCLUDES", "flowengine", "") is True
    assert call("INCLUDES", [1, "a", None], "a") is True
    assert call("INCLUDES", [1, "a"], None) is False
    assert call("INCLUDES", [1], True) is False  # true is not 1
    assert call("INCLUDES", [[1, 2]], [1, 2]) is True
    assert call("IN", "b", ["a", "b"]) is True
    assert call("IN", 1.0, [1]) is True
    assert call("IN", 1, [True]) is False
    assert call("IN", "c", []) is False
    fails("INCLUDES", None, "a", error=TypeError, message="INCLUDES expects text or a list to look in, got null")
    fails("INCLUDES", "123", 2, error=TypeError, message="INCLUDES expects text, got number 2")
    fails("IN", "a", "abc", error=TypeError, message="IN expects a list, got text 'abc'")


def test_startswith_endswith():
    assert call("STARTSWITH", "flowengine", "flow") is True
    assert call("STARTSWITH", "flowengine", "engine") is False
    assert call("ENDSWITH", "flowengine", "engine") is True
    assert call("ENDSWITH", "flowengine", "") is True
    fails("STARTSWITH", 12, "1", error=TypeError, message="STARTSWITH expects text, got number 12")
    fails("ENDSWITH", "a", None, error=TypeError, message="ENDSWITH expects text, got null")


def test_replace():
    assert call("REPLACE", "a-b-c", "-", "+") == "a+b+c"
    assert call("REPLACE", "abc", "x", "y") == "abc"
    assert call("REPLACE", "aaa", "a", "") == ""
    fails("REPLACE", "abc", "", "x", message="REPLACE needs some text to look for, got empty text ''")
    fails("REPLACE", "abc", "b", 1, error=TypeError, message="REPLACE expects text, got number 1")
    fails("REPLACE", "a" * 1000, "a", "b" * 101, message="REPLACE result would be 101,000 characters long; the limit is 100,000")


def test_substring():
    assert call("SUBSTRING", "flowengine", 4) == "engine"
    assert call("SUBSTRING", "flowengine", 0, 4) == "flow"
    assert call("SUBSTRING", "flowengine", 4, 100) == "engine"
    assert call("SUBSTRING", "flow", 10) == ""
    assert call("SUBSTRING", "flow", 1, 0) == ""
    fails("SUBSTRING", "flow", -1, message="SUBSTRING start must be 0 or more, got -1")
    fails("SUBSTRING", "flow", 0, -2, message="SUBSTRING length must be 0 or more, got -2")
    fails("SUBSTRING", "flow", 1.5, message="SUBSTRING expects a whole number, got number 1.5")
    fails("SUBSTRING", 1234, 1, error=TypeError, message="SUBSTRING expects text, got number 1234")


def test_split():
    assert call("SPLIT", "a,b,,c", ",") == ["a", "b", "", "c"]
    assert call("SPLIT", "", ",") == [""]
    assert call("SPLIT", "a::b", "::") == ["a", "b"]
    assert call("SPLIT", "abc", "") == ["a", "b", "c"]
    assert len(call("SPLIT", "," * (MAX_LIST - 1), ",")) == MAX_LIST
    fails("SPLIT", "," * MAX_LIST, ",", message="SPLIT would make a list of more than 10,000 items")
    fails("SPLIT", "a" * (MAX_LIST + 1), "", message="SPLIT would make a list of more than 10,000 items")
    fails("SPLIT", None, ",", error=TypeError, message="SPLIT expects text, got null")


def test_join():
    assert call("JOIN", ["a", 1, True, None, 2.0], "-") == "a-1-true--2"
    assert call("JOIN", [], ",") == ""
    assert call("JOIN", ["a"], ",") == "a"
    fails("JOIN", "abc", ",", error=TypeError, message="JOIN expects a list, got text 'abc'")
    fails("JOIN", ["a", "b"], 1, error=TypeError, message="JOIN expects text, got number 1")
    fails("JOIN", ["a" * 50_000, "b" * 50_000], ", ", message="JOIN result would be 100,002 characters long; the limit is 100,000")


# --- Conversion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, number",
    [
        ("42", 42),
        (" -7 ", -7),
        ("+3", 3),
        ("2.5", 2.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("007", 7),
        (12, 12),
        (1.5, 1.5),
        (True, 1),
        (False, 0),
    ],
)
def test_tonumber(value, number):
    result = call("TONUMBER", value)
    assert result == number and type(result) is type(number)


@pytest.mark.parametrize("value", ["", "abc", "1,000", "1_000", "0x10", "nan", "inf", "1e", "--1", "1 2", "٣"])
def test_tonumber_refuses_text(value):
    fails("TONUMBER", value, message=f"TONUMBER expects text that is a number, like '42' or '2.5', got {describe(value)}")


def test_tonumber_bounds():
    fails("TONUMBER", "1e999", message="TONUMBER result is too large")
    fails("TONUMBER", "9" * 309, message="TONUMBER result is too large")
    assert call("TONUMBER", "0" * 390 + "5") == 5
    fails("TONUMBER", "1" * 401, message=f"TONUMBER expects text that is a number, like '42' or '2.5', got {describe('1' * 401)}")
    fails("TONUMBER", None, error=TypeError, message="TONUMBER expects text, got null")
    fails("TONUMBER", [1], error=TypeError, message="TONUMBER expects text, got a list of 1 item")


def test_tointeger():
    assert call("TOINTEGER", "3.7") == 3
    assert call("TOINTEGER", -3.7) == -3
    assert call("TOINTEGER", "42") == 42
    assert call("TOINTEGER", True) == 1
    fails("TOINTEGER", "x", message="TOINTEGER expects text that is a number, like '42' or '2.5', got text 'x'")
    fails("TOINTEGER", None, error=TypeError, message="TOINTEGER expects text, got null")


@pytest.mark.parametrize(
    "value, result",
    [
        (True, True),
        (False, False),
        (None, False),
        (0, False),
        (0.0, False),
        (2, True),
        ("true", True),
        (" TRUE ", True),
        ("yes", True),
        ("1", True),
        ("on", True),
        ("false", False),
        ("No", False),
        ("0", False),
        ("off", False),
        ("", False),
    ],
)
def test_toboolean(value, result):
    assert call("TOBOOLEAN", value) is result


def test_toboolean_errors():
    fails("TOBOOLEAN", "maybe", message="TOBOOLEAN expects text like 'true' or 'false', got text 'maybe'")
    fails("TOBOOLEAN", [], error=TypeError, message="TOBOOLEAN expects text, got a list of 0 items")


# --- Math -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, result",
    [
        ((2.5,), 3),
        ((-2.5,), -3),
        ((0.5,), 1),
        ((2.4,), 2),
        ((2.675, 2), 2.68),
        ((1.005, 2), 1.01),
        ((-1.005, 2), -1.01),
        ((1.234, 1), 1.2),
        ((1250, -2), 1300),
        ((-1250, -2), -1300),
        ((1249, -2), 1200),
        ((1254.9, -1), 1250),
        ((7, 2), 7),
        ((1e300, 2), 1e300),
        ((0.1, 308), 0.1),
    ],
)
def test_round(args, result):
    rounded = call("ROUND", *args)
    assert rounded == result and type(rounded) is type(result)


def test_round_errors():
    fails("ROUND", "abc", error=TypeError, message="ROUND expects a number, got text 'abc'")
    fails("ROUND", None, error=TypeError, message="ROUND expects a number, got null")
    fails("ROUND", 1.5, 1.5, message="ROUND expects a whole number, got number 1.5")
    fails("ROUND", 1.5, 309, message="ROUND digits must be between -308 and 308, got 309")
    fails("ROUND", float("inf"), message="ROUND expects a finite number, got inf")
    fails("ROUND", float("nan"), message="ROUND expects a finite number, got nan")


def test_floor_ceil_abs():
    assert call("FLOOR", 2.7) == 2 and call("FLOOR", -2.2) == -3 and call("FLOOR", 5) == 5
    assert call("CEIL", 2.2) == 3 and call("CEIL", -2.7) == -2
    assert isinstance(call("FLOOR", 2.7), int)
    assert call("ABS", -3) == 3 and call("ABS", -2.5) == 2.5 and call("ABS", 0) == 0
    fails("FLOOR", "2", error=TypeError, message="FLOOR expects a number, got text '2'")
    fails("CEIL", True, error=TypeError, message="CEIL expects a number, got boolean true")
    fails("ABS", [], error=TypeError, message="ABS expects a number, got a list of 0 items")


def test_mod():
    assert call("MOD", 7, 3) == 1
    assert call("MOD", -7, 3) == 2
    assert call("MOD", 7, -3) == -2
    assert call("MOD", 5.5, 2) == 1.5
    fails("MOD", 1, 0, message="MOD cannot divide by zero")
    fails("MOD", 1, 0.0, message="MOD cannot divide by zero")
    fails("MOD", "7", 3, error=TypeError, message="MOD expects a number, got text '7'")


def test_min_max():
    assert call("MIN", 3, 1, 2) == 1 and call("MIN", [3, 1.5, 2]) == 1.5
    assert call("MAX", 3, 1, 2) == 3 and call("MAX", [-1, -5]) == -1
    assert call("MAX", 4) == 4
    fails("MIN", message="MIN needs at least one number")
    fails("MAX", [], message="MAX needs at least one number")
    fails("MAX", 1, "2", error=TypeError, message="MAX expects a number, got text '2'")
    fails("MIN", [1, None], error=TypeError, message="MIN expects a number, got null")


def test_sum_average():
    assert call("SUM", 1, 2, 3) == 6 and call("SUM", [1, 2.5]) == 3.5
    assert call("SUM") == 0 and call("SUM", []) == 0
    assert call("AVERAGE", 1, 2, 6) == 3 and call("AVERAGE", [1, 2]) == 1.5
    fails("AVERAGE", [], message="AVERAGE needs at least one number")
    fails("SUM", 1, True, error=TypeError, message="SUM expects a number, got boolean true")
    fails("SUM", 1e308, 1e308, message="SUM result is too large")


def test_product():
    assert call("PRODUCT", 2, 3, 4) == 24
    assert call("PRODUCT", [2, 2.5]) == 5.0
    assert call("PRODUCT", *[1] * 100) == 1
    fails("PRODUCT", 2, message="PRODUCT takes 2 to 100 numbers (or one list), got 1")
    fails("PRODUCT", *[1] * 101, message="PRODUCT takes 2 to 100 numbers (or one list), got 101")
    fails("PRODUCT", [10**300] * 3, message="PRODUCT result is too large")
    fails("PRODUCT", 1e300, 1e300, message="PRODUCT result is too large")
    fails("PRODUCT", 2, "3", error=TypeError, message="PRODUCT expects a number, got text '3'")


# --- Dates ----------------------------------------------------------------------------------


@pytest.fixture
def frozen_now(monkeypatch):
    moment = datetime(2026, 11, 26, 18, 53, 5, 123456, tzinfo=timezone.utc)
    monkeypatch.setattr(functions, "_utcnow", lambda: moment)
    return moment


def test_now_and_today(frozen_now):
    assert call("NOW") == "2026-11-26T18:53:05.123Z"
    assert call("TODAY") == "2026-11-26"


def test_now_real_clock():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", call("NOW"))


@pytest.mark.parametrize(
    "args, result",
    [
        (("2026-11-26T18:53:05.123Z", 5), "2026-12-01T18:53:05.123Z"),
        (("2026-11-26T18:53:05.123Z", -1), "2026-11-25T18:53:05.123Z"),
        (("2026-11-26T18:53:05.123Z", 90, "minutes"), "2026-11-26T20:23:05.123Z"),
        (("2026-11-26T18:53:05.123Z", 30, "seconds"), "2026-11-26T18:53:35.123Z"),
        (("2026-11-26T18:53:05.123Z", 1.5, "hours"), "2026-11-26T20:23:05.123Z"),
        (("2026-11-26T18:53:05.123Z", 2, "weeks"), "2026-12-10T18:53:05.123Z"),
        (("2026-11-26T18:53:05.123Z", 1, "Month"), "2026-12-26T18:53:05.123Z"),
        (("2026-11-26T18:53:05.123Z", 1, "year"), "2027-11-26T18:53:05.123Z"),
        (("2026-11-26T20:00:00+02:00", 0), "2026-11-26T18:00:00.000Z"),
        (("2026-11-26T18:00:00", 0), "2026-11-26T18:00:00.000Z"),
        (("2026-01-31", 1, "months"), "2026-02-28"),
        (("2024-01-31", 1, "months"), "2024-02-29"),
        (("2024-02-29", 1, "years"), "2025-02-28"),
        (("2026-03-31", -1, "months"), "2026-02-28"),
        (("2026-12-15", 1, "months"), "2027-01-15"),
        (("2026-01-15", -13, "months"), "2024-12-15"),
        (("2026-11-26", 5), "2026-12-01"),
        (("2026-11-26", 2, "hours"), "2026-11-26T02:00:00.000Z"),
        (("2026-11-26", 24, "hours"), "2026-11-27"),
        (("2026-11-26", 1.5), "2026-11-27T12:00:00.000Z"),
        (("0999-01-01T00:00:00Z", 1, "seconds"), "0999-01-01T00:00:01.000Z"),
    ],
)
def test_dateadd(args, result):
    assert call("DATEADD", *args) == result


def test_dateadd_now(frozen_now):
    assert call("DATEADD", call("NOW"), 5) == "2026-12-01T18:53:05.123Z"


def test_dateadd_errors():
    fails("DATEADD", "tomorrow", 1, message="DATEADD expects a date like '2026-11-26' or '2026-11-26T18:53:05.123Z', got text 'tomorrow'")
    fails("DATEADD", None, 1, message="DATEADD expects a date like '2026-11-26' or '2026-11-26T18:53:05.123Z', got null")
    fails("DATEADD", "2026-02-30", 1, message="DATEADD expects a date like '2026-11-26' or '2026-11-26T18:53:05.123Z', got text '2026-02-30'")
    fails("DATEADD", "2026-11-26", "1", error=TypeError, message="DATEADD expects a number, got text '1'")
    fails("DATEADD", "2026-11-26", 1, "fortnights", message="DATEADD unit must be seconds, minutes, hours, days, weeks, months or years, got text 'fortnights'")
    fails("DATEADD", "2026-11-26", 1.5, "months", message="DATEADD expects a whole number, got number 1.5")
    fails("DATEADD", "9999-12-31", 1, message="DATEADD result is out of range (years 1 to 9999)")
    fails("DATEADD", "2026-11-26", 10**6, "years", message="DATEADD result is out of range (years 1 to 9999)")
    fails("DATEADD", "2026-11-26", 1e20, "seconds", message="DATEADD result is out of range (years 1 to 9999)")


@pytest.mark.parametrize(
    "args, result",
    [
        (("2026-01-01", "2026-01-31"), 30),
        (("2026-01-31", "2026-01-01"), -30),
        (("2026-01-01T00:00:00Z", "2026-01-01T23:59:59Z"), 0),
        (("2026-01-02T00:00:00Z", "2026-01-01T00:00:01Z"), 0),
        (("2026-01-01T00:00:00Z", "2026-01-01T01:30:00Z", "minutes"), 90),
        (("2026-01-01T00:00:00Z", "2026-01-01T01:30:00Z", "hours"), 1),
        (("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.999Z", "seconds"), 1),
        (("2026-01-01", "2026-01-15", "weeks"), 2),
        (("2026-01-31", "2026-02-28", "months"), 0),
        (("2026-01-31", "2026-03-01", "months"), 1),
        (("2026-01-15", "2027-01-15", "months"), 12),
        (("2027-01-15", "2026-01-16", "months"), -11),
        (("2026-01-15", "2027-01-14", "years"), 0),
        (("2026-01-15", "2028-01-15", "years"), 2),
        (("2028-01-15", "2026-01-16", "years"), -1),
        (("2026-11-26T20:00:00+02:00", "2026-11-26T18:00:00Z", "seconds"), 0),
    ],
)
def test_datediff(args, result):
    assert call("DATEDIFF", *args) == result


def test_datediff_errors():
    fails("DATEDIFF", "2026-01-01", 5, message="DATEDIFF expects a date like '2026-11-26' or '2026-11-26T18:53:05.123Z', got number 5")
    fails("DATEDIFF", "2026-01-01", "2026-01-02", "days!", message="DATEDIFF unit must be seconds, minutes, hours, days, weeks, months or years, got text 'days!'")


# --- The sandbox bounds hold for every builder ------------------------------------------------


def test_caps_are_the_published_limits():
    assert (MAX_TEXT, MAX_LIST) == (100_000, 10_000)
