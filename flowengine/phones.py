"""What libphonenumber says about a number, worked out once per number.

Parsing a number is the costliest step of an SMS flow, and one request asks about the same
number several times (is it a mobile? which country? its E.164 form?), so each number's
facts are kept in a bounded cache, and each fact is worked out only when first asked for.
"""

from __future__ import annotations

from functools import cached_property, lru_cache

import phonenumbers

MOBILE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE})


class Phone:
    """The facts about one parsed international number."""

    def __init__(self, number: phonenumbers.PhoneNumber) -> None:
        self.number = number

    @cached_property
    def e164(self) -> str:
        return phonenumbers.format_number(self.number, phonenumbers.PhoneNumberFormat.E164)

    @cached_property
    def possible(self) -> bool:
        return phonenumbers.is_possible_number(self.number)

    @cached_property
    def country(self) -> str | None:
        return phonenumbers.region_code_for_number(self.number)

    @cached_property
    def valid(self) -> bool:
        return self.country is not None and phonenumbers.is_valid_number_for_region(self.number, self.country)

    @cached_property
    def mobile(self) -> bool:
        return self.valid and phonenumbers.number_type(self.number) in MOBILE_TYPES


@lru_cache(maxsize=4096)
def phone(text: str) -> Phone | None:
    """The facts about an international number (``+14155552671``), or None if it is not one."""
    try:
        return Phone(phonenumbers.parse(text, None))
    except phonenumbers.NumberParseException:
        return None


def masked(text: str) -> str:
    """A number fit for a log line: its country code and last 2 digits (``+1********71``).

    Text that is no international number keeps only its last 2 characters.
    """
    facts = phone(text)
    if facts is None:
        return "*" * len(text[:-2]) + text[-2:]
    national = str(facts.number.national_number)
    return f"+{facts.number.country_code}{'*' * len(national[:-2])}{national[-2:]}"
