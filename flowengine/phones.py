"""What libphonenumber says about a number, worked out once per number.

Parsing a number is the costliest step of an SMS flow, and one request asks about the same
number several times (is it a mobile? which country? its E.164 form?), so the answers are
kept in a bounded cache keyed by the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import phonenumbers

MOBILE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


@dataclass(frozen=True, slots=True)
class Phone:
    e164: str
    country: str | None
    possible: bool
    valid: bool
    mobile: bool


@lru_cache(maxsize=4096)
def phone(text: str) -> Phone | None:
    """The facts about an international number (``+14155552671``), or None if it is not one."""
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    valid = phonenumbers.is_valid_number(number)
    return Phone(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=phonenumbers.region_code_for_number(number),
        possible=phonenumbers.is_possible_number(number),
        valid=valid,
        mobile=valid and phonenumbers.number_type(number) in MOBILE_TYPES,
    )
