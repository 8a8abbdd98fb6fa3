"""SMS: one ``send(to, body)`` whether the app keeps texts in its outbox or sends them via Twilio.

``open_sms`` reads the ``sms`` section of app.yaml once, at start-up, and refuses a provider it
does not know or credentials that are missing, so a misconfigured app fails to load instead
of failing on its first sign-in.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread
import phonenumbers
from requests import RequestException
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from flowengine import limits
from flowengine.errors import FlowError
from flowengine.phones import masked, phone
from flowengine.messaging.outbox import DEFAULT_KEEP, SmsOutbox

log = logging.getLogger("flowengine.sms")

PROVIDERS = ("outbox", "twilio")
DEFAULT_TIMEOUT = 10.0
HOUR, DAY = 3600.0, 86400.0


def open_sms(settings: dict[str, Any] | None, cache: Any) -> Any:
    """The SMS provider the ``sms`` settings ask for (the outbox when there are none), behind
    the app's rules: the countries it may text and how many texts it may send."""
    settings = settings or {}
    provider = settings.get("provider") or "outbox"
    if provider == "outbox":
        sender: Any = SmsOutbox(cache, settings.get("keep", DEFAULT_KEEP))
    elif provider == "twilio":
        sender = open_twilio(settings.get("twilio") or {})
    else:
        choices = ", ".join(PROVIDERS)
        raise ValueError(f"sms.provider: unknown provider {provider!r} (expected one of {choices})")
    countries = allowed_countries(settings.get("allowed_countries"))
    if provider == "twilio" and not countries:
        raise ValueError("sms.allowed_countries: required when sms.provider is 'twilio' (the ISO codes of the"
                         " countries the app may text, e.g. [US]): texting every country invites SMS-pumping fraud")
    budget = send_limits(settings.get("limits"), paid=provider != "outbox")
    return SmsRules(sender, cache, countries, budget) if countries or budget else sender


@dataclass(frozen=True)
class SendLimits:
    """How many texts the app may send: a budget per hour and per day, and per block of 1,000
    numbers a day."""

    per_hour: int | None = 30
    per_day: int | None = 200
    per_prefix_per_day: int | None = 20


class SmsRules:
    """The provider behind the app's rules, checked before any provider is paid to try.

    SMS pumping fraud sends codes to premium numbers: a country allow-list is the cheap cure.
    A budget per hour caps what a bot can spend anyway, one per day what it can spend while
    nobody watches, and a cap per block of 1,000 numbers (the number without its last three
    digits) stops one range from being milked.
    """

    def __init__(self, provider: Any, cache: Any, countries: frozenset[str], budget: SendLimits | None) -> None:
        self.provider = provider
        self.cache = cache
        self.countries = countries
        self.budget = budget

    async def check(self, to: str) -> None:
        """Refuse a number the app may not text now (its country, or a spent budget), counting nothing."""
        self._check_country(to)
        for key, limit, window, message in self._counters(to):
            await limits.peek(self.cache, key, limit, window, message)

    async def send(self, to: str, body: str) -> dict[str, Any]:
        self._check_country(to)
        for key, limit, window, message in self._counters(to):
            await limits.hit(self.cache, key, limit, window, message)
        return await self.provider.send(to, body)

    def _check_country(self, to: str) -> None:
        if not self.countries:
            return
        country = country_of(to)
        if country not in self.countries:
            raise FlowError("sms_country_not_allowed", "SMS to this country is not allowed",
                            status=400, details={"country": country})

    def _counters(self, to: str) -> list[tuple[str, int, float, str]]:
        """(key, limit, window, message) of each budget a text to ``to`` spends."""
        if self.budget is None:
            return []
        counters = []
        if self.budget.per_prefix_per_day:  # narrowest first: it refuses without spending the hour's budget
            counters.append((f"sms-prefix:{_block(to)}", self.budget.per_prefix_per_day, DAY,
                             "Too many texts went to numbers like this one today"))  # fmt: skip
        if self.budget.per_hour:
            counters.append(("sms-budget", self.budget.per_hour, HOUR, "The app has sent all the texts it may send this hour"))
        if self.budget.per_day:  # after the hour's: a refusal this hour does not spend the day's
            counters.append(("sms-budget-day", self.budget.per_day, DAY, "The app has sent all the texts it may send today"))
        return counters

    async def close(self) -> None:
        await self.provider.close()


def _block(number: str) -> str:
    """The block of 1,000 numbers ``number`` is in: its international form without the last 3 digits."""
    facts = phone(number)
    return (facts.e164 if facts is not None else number.strip())[:-3]


def send_limits(settings: Any, paid: bool) -> SendLimits | None:
    """The ``limits`` setting (``per_hour``, ``per_day``, ``per_prefix_per_day``; null lifts one). A paid
    provider gets the defaults; the outbox, which costs nothing, none unless asked."""
    if settings is None:
        return SendLimits() if paid else None
    if not isinstance(settings, dict) or set(settings) - set(asdict(SendLimits())):
        raise ValueError(f"sms.limits must have per_hour, per_day and/or per_prefix_per_day, not {settings!r}")
    for name, value in settings.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"sms.limits.{name} must be a whole number from 1, or null for no limit, not {value!r}")
    return SendLimits(**{**asdict(SendLimits()), **settings})


def allowed_countries(codes: Any) -> frozenset[str]:
    """The ``allowed_countries`` setting as upper-case ISO codes, each one checked."""
    if not codes:
        return frozenset()
    if isinstance(codes, str) or not isinstance(codes, list):
        raise ValueError(f"sms.allowed_countries must be a list of ISO codes, not {codes!r}")
    upper = frozenset(str(code).upper() for code in codes)
    unknown = sorted(upper - phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ValueError(f"sms.allowed_countries: unknown country code(s) {', '.join(unknown)}")
    return upper


def country_of(number: str) -> str | None:
    """The ISO country of an international number, or None when it is not a valid one."""
    facts = phone(number)
    return facts.country if facts is not None else None


class TwilioSms:
    """Sends through Twilio's Messages API with the official SDK.

    The SDK blocks (it uses ``requests``), so every send runs in a worker thread: a slow
    Twilio must never stall the other requests this process is serving.
    """

    def __init__(self, client: Client, sender: dict[str, str]) -> None:
        self.client = client
        self.sender = sender

    async def send(self, to: str, body: str) -> dict[str, Any]:
        message = await anyio.to_thread.run_sync(self._create, to, body)
        return {"id": message.sid, "to": message.to}

    def _create(self, to: str, body: str) -> Any:
        try:
            return self.client.messages.create(to=to, body=body, **self.sender)
        except TwilioException as exc:
            raise _failed(to, getattr(exc, "code", None), exc, _may_pass(getattr(exc, "status", None))) from exc
        except RequestException as exc:
            raise _failed(to, None, exc, retryable=True) from exc

    async def close(self) -> None:
        """The SDK's connection pool closes with the process."""


def _without(text: str, number: str) -> str:
    """``text`` with ``number`` masked: Twilio's messages may quote the number they refused."""
    return text.replace(number, masked(number)) if number else text


def _may_pass(status: Any) -> bool:
    """Whether Twilio may accept the same message later: it was busy (429) or failing (5xx).
    A 4xx such as 21211 (not a valid number) or 20003 (bad credentials) will never pass."""
    return not isinstance(status, int) or status == 429 or status >= 500


def _failed(to: str, code: Any, exc: Exception, retryable: bool) -> FlowError:
    """The client learns only that sending failed; Twilio's own words go to the log (the number masked)."""
    reason = getattr(exc, "msg", None) or getattr(exc, "detail", None) or repr(exc)
    log.warning("twilio could not send an SMS to %s: code=%s %s", masked(to), code, _without(reason, to))
    return FlowError("sms_failed", "The SMS could not be sent", status=502,
                     details={"provider_code": code}, retryable=retryable)


def open_twilio(settings: dict[str, Any]) -> TwilioSms:
    """A Twilio provider from ``sms.twilio``; raises ValueError naming what is missing."""
    missing = [key for key in ("account_sid", "auth_token") if not settings.get(key)]
    if missing:
        needed = " and ".join(missing)
        raise ValueError(f"sms.twilio: {needed} required when sms.provider is 'twilio'")
    http = RebasedHttpClient(settings.get("base_url") or None, _timeout(settings.get("timeout")))
    client = Client(settings["account_sid"], settings["auth_token"], http_client=http)
    return TwilioSms(client, _sender(settings))


def _sender(settings: dict[str, Any]) -> dict[str, str]:
    """Twilio's ``From`` number or ``MessagingServiceSid``; a messaging service wins."""
    if settings.get("messaging_service_sid"):
        return {"messaging_service_sid": settings["messaging_service_sid"]}
    if settings.get("from"):
        return {"from_": settings["from"]}
    raise ValueError("sms.twilio: set 'from' (a Twilio number) or 'messaging_service_sid'")


def _timeout(value: Any) -> float:
    if value in (None, ""):
        return DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"sms.twilio.timeout must be a positive number of seconds, not {value!r}")
    return float(value)


class RebasedHttpClient(TwilioHttpClient):
    """The SDK's HTTP client, sending to ``base_url`` (a local fake) instead of twilio.com.

    ``http_client`` is the SDK's supported hook for the transport; ``edge`` and ``region``
    only choose among Twilio's own hosts. It also carries the timeout, which the SDK's
    default client leaves infinite.
    """

    def __init__(self, base_url: str | None, timeout: float) -> None:
        super().__init__(timeout=timeout)
        self.base = urlsplit(base_url) if base_url else None
        if self.base and (self.base.scheme not in ("http", "https") or not self.base.netloc):
            raise ValueError(f"sms.twilio.base_url must be an http(s) URL, not {base_url!r}")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.base:
            path = urlsplit(url)
            url = urlunsplit((self.base.scheme, self.base.netloc,
                              self.base.path.rstrip("/") + path.path, path.query, ""))
        return super().request(method, url, *args, **kwargs)
