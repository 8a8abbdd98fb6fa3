"""SMS: the outbox, its dev routes, and Twilio through the real SDK against a local fake."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

import pytest
from fake_twilio import INVALID_NUMBER, serve_fake_twilio
from starlette.applications import Starlette
from starlette.testclient import TestClient

from flowengine.cache import open_cache
from flowengine.context import RunContext, Services
from flowengine.errors import FlowError
from flowengine.graph import compile_flow
from flowengine.interpreter import run_flow
from flowengine.messaging.outbox import latest
from flowengine.http.outbox import outbox_routes
from flowengine.messaging.sms import SendLimits, open_sms, send_limits
from flowengine.registry import Registry
from flowengine.spec.yamlfile import loads
from flowengine_nodes.messaging import send_sms

US, GB, FR = "+14155552671", "+447400123456", "+33612345678"


@pytest.fixture
def cache():
    return open_cache(None, "test-sms")


@pytest.fixture(params=["memory", "redis"])
async def shared_cache(request, anyio_backend):
    """The outbox lives in the app's cache: in-process, or Redis shared by every process."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    cache = open_cache(url, f"test-sms-{uuid.uuid4().hex}")
    yield cache
    await cache.delete("outbox:sms")
    await cache.close()


@pytest.fixture(scope="module")
def twilio_server():
    with serve_fake_twilio() as fake:
        yield fake


@pytest.fixture
def twilio(twilio_server):
    twilio_server.requests.clear()
    twilio_server.delay = 0.0
    twilio_server.busy = 0
    return twilio_server


def twilio_settings(fake, **overrides):
    twilio = {"account_sid": fake.account_sid, "auth_token": fake.auth_token,
              "from": "+15017122661", "base_url": fake.base_url, **overrides}
    return {"provider": "twilio", "allowed_countries": ["US"], "twilio": twilio}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- outbox -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_outbox_keeps_the_last_n_newest_first(shared_cache, caplog):
    sms = open_sms({"keep": 3}, shared_cache)
    with caplog.at_level(logging.INFO, logger="flowengine.outbox"):
        sent = [await sms.send(US, f"code {n}") for n in range(5)]
    records = await shared_cache.items("outbox:sms")
    assert [r["body"] for r in records] == ["code 4", "code 3", "code 2"]
    assert records[0] == {"id": sent[4]["id"], "channel": "sms", "to": US, "body": "code 4",
                          "sentAt": records[0]["sentAt"]}
    assert records[0]["sentAt"].endswith("Z") and sent[4] == {"id": sent[4]["id"], "to": US}
    assert caplog.messages[-1] == f"outbox sms to {US}: code 4"


@pytest.mark.anyio
async def test_outbox_latest_by_recipient(shared_cache):
    sms = open_sms(None, shared_cache)
    await sms.send(US, "for us 1")
    await sms.send(GB, "for gb")
    await sms.send(US, "for us 2")
    assert (await latest(shared_cache, "sms"))["body"] == "for us 2"
    assert (await latest(shared_cache, "sms", GB))["body"] == "for gb"
    assert await latest(shared_cache, "sms", FR) is None


def test_dev_route_reads_latest_sms_with_a_raw_plus(cache):
    client = TestClient(Starlette(routes=outbox_routes(cache)))
    asyncio.run(open_sms(None, cache).send(US, "Your code is 123456"))
    for query in (f"to={US}", "to=%2B14155552671", ""):
        response = client.get(f"/_dev/outbox/sms/latest?{query}")
        assert response.status_code == 200, query
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "Your code is 123456"


def test_dev_route_answers_404_in_the_altogic_shape(cache):
    client = TestClient(Starlette(routes=outbox_routes(cache)))
    response = client.get(f"/_dev/outbox/sms/latest?to={GB}")
    assert response.status_code == 404
    assert response.json() == {"errors": [{"origin": "client_error", "code": "outbox_empty",
                                           "message": f"No sms message to {GB} in the outbox"}]}


# --- allowed countries --------------------------------------------------------------------


@pytest.mark.anyio
async def test_allowed_countries_refuse_other_countries(cache):
    sms = open_sms({"allowed_countries": ["gb", "US"]}, cache)
    await sms.send(GB, "ok")
    for number, country in ((FR, "FR"), ("0612345678", None)):
        with pytest.raises(FlowError) as caught:
            await sms.send(number, "no")
        assert (caught.value.code, caught.value.status) == ("sms_country_not_allowed", 400)
        assert caught.value.details == {"country": country}
    assert [r["to"] for r in await cache.items("outbox:sms")] == [GB]


@pytest.mark.anyio
async def test_allowed_countries_stop_a_number_before_twilio(twilio, cache):
    sms = open_sms({**twilio_settings(twilio), "allowed_countries": ["US"]}, cache)
    with pytest.raises(FlowError, match="not allowed"):
        await sms.send(FR, "no")
    assert twilio.requests == []


# --- the app's SMS budget (security O9, O10) ----------------------------------------------


def block(i: int) -> str:
    """A US number in its own block of 1,000 numbers (the block is all but the last 3 digits)."""
    return f"+1415555{i:02d}00"


@pytest.mark.anyio
async def test_twilio_sends_at_most_the_hourly_budget(twilio, shared_cache):
    sms = open_sms(twilio_settings(twilio), shared_cache)  # a paid provider: 30 texts an hour by default
    for i in range(30):
        await sms.send(block(i), "code")
    with pytest.raises(FlowError) as caught:
        await sms.send(block(30), "code")
    assert (caught.value.status, caught.value.code) == (429, "too_many_requests")
    assert 3500 < caught.value.details["retryAfter"] <= 3600
    assert len(twilio.requests) == 30


@pytest.mark.anyio
async def test_twilio_texts_one_block_of_numbers_at_most_20_times_a_day(twilio, shared_cache):
    sms = open_sms(twilio_settings(twilio), shared_cache)
    for i in range(20):
        await sms.send(f"+1415555{i:04d}", "code")  # +14155550000 ... +14155550019: one block
    with pytest.raises(FlowError) as caught:
        await sms.send("+14155550999", "code")
    assert caught.value.status == 429 and 86_000 < caught.value.details["retryAfter"] <= 86_400
    await sms.send("+14155551000", "code")  # the next block
    assert len(twilio.requests) == 21


def test_twilio_gets_a_daily_budget_of_200_texts_by_default():
    assert send_limits(None, paid=True) == SendLimits(per_hour=30, per_day=200, per_prefix_per_day=20)
    assert send_limits({"per_day": None}, paid=True).per_day is None
    assert send_limits(None, paid=False) is None


@pytest.mark.anyio
async def test_twilio_sends_at_most_the_daily_budget(twilio, shared_cache):
    sms = open_sms({**twilio_settings(twilio), "limits": {"per_hour": None, "per_day": 3}}, shared_cache)
    for i in range(3):
        await sms.send(block(i), "code")
    with pytest.raises(FlowError):
        await sms.check(block(3))  # asking is refused too, before any code is made
    with pytest.raises(FlowError) as caught:
        await sms.send(block(3), "code")
    assert (caught.value.status, caught.value.code) == (429, "too_many_requests")
    assert 86_000 < caught.value.details["retryAfter"] <= 86_400
    assert caught.value.message == "The app has sent all the texts it may send today"
    assert len(twilio.requests) == 3


@pytest.mark.anyio
async def test_check_refuses_a_spent_budget_without_spending_any(twilio, cache):
    sms = open_sms({**twilio_settings(twilio), "limits": {"per_hour": 2, "per_prefix_per_day": None}}, cache)
    for _ in range(10):
        await sms.check(US)  # asking costs nothing
    await sms.send(block(1), "code")
    await sms.send(block(2), "code")
    with pytest.raises(FlowError) as caught:
        await sms.check(block(3))
    assert caught.value.status == 429 and len(twilio.requests) == 2


@pytest.mark.anyio
async def test_the_outbox_has_no_budget_unless_the_app_sets_one(cache):
    free = open_sms(None, cache)
    for i in range(40):
        await free.send(block(i % 2), "code")
    limited = open_sms({"limits": {"per_hour": None, "per_prefix_per_day": 3}}, open_cache(None, "test-sms-limited"))
    for _ in range(3):
        await limited.send(US, "code")
    with pytest.raises(FlowError):
        await limited.send(US, "code")


# --- Twilio -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_twilio_sends_the_request_twilio_expects(twilio, cache):
    sent = await open_sms(twilio_settings(twilio), cache).send(US, "Your code is 123456")
    [request] = twilio.requests
    assert request["path"] == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    assert request["auth"] == (twilio.account_sid, twilio.auth_token)
    assert request["content_type"] == "application/x-www-form-urlencoded"
    assert request["form"] == {"To": US, "From": "+15017122661", "Body": "Your code is 123456"}
    assert sent["to"] == US and sent["id"].startswith("SM")
    assert await cache.items("outbox:sms") == []


@pytest.mark.anyio
async def test_twilio_messaging_service_replaces_from(twilio, cache):
    settings = twilio_settings(twilio, messaging_service_sid="MG" + "1" * 32)
    await open_sms(settings, cache).send(US, "hi")
    assert twilio.requests[0]["form"] == {"To": US, "MessagingServiceSid": "MG" + "1" * 32, "Body": "hi"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("settings", "to", "provider_code"),
    [({}, INVALID_NUMBER, 21211), ({"auth_token": "wrong"}, US, 20003)],
    ids=["invalid-number", "bad-credentials"],
)
async def test_twilio_errors_become_sms_failed(twilio, cache, caplog, settings, to, provider_code):
    sms = open_sms(twilio_settings(twilio, **settings), cache)
    with pytest.raises(FlowError) as caught:
        await sms.send(to, "hi")
    assert caught.value.body() == {"errors": [{
        "origin": "server_error", "code": "sms_failed", "message": "The SMS could not be sent",
        "details": {"provider_code": provider_code}}]}
    assert caught.value.status == 502
    assert f"code={provider_code}" in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize(("settings", "to"), [({"auth_token": "wrong"}, US), ({}, INVALID_NUMBER)],
                         ids=["bad-credentials", "twilio-quotes-the-number"])  # fmt: skip
async def test_a_failed_send_logs_the_number_masked(twilio, cache, caplog, settings, to):
    """Security A5: no full phone number in the logs; its country code and last 2 digits say enough."""
    sms = open_sms(twilio_settings(twilio, **settings), cache)
    with pytest.raises(FlowError):
        await sms.send(to, "hi")
    [line] = [r.getMessage() for r in caplog.records if r.name == "flowengine.sms"]
    assert to[2:] not in line
    assert f"to +1********{to[-2:]}: code=" in line


@pytest.mark.anyio
async def test_twilio_unreachable_is_sms_failed(cache):
    settings = {"provider": "twilio", "allowed_countries": ["US"], "twilio": {
        "account_sid": "AC1", "auth_token": "t", "from": "+1", "timeout": 2,
        "base_url": f"http://127.0.0.1:{closed_port()}"}}
    with pytest.raises(FlowError) as caught:
        await open_sms(settings, cache).send(US, "hi")
    assert (caught.value.code, caught.value.details) == ("sms_failed", {"provider_code": None})


@pytest.mark.anyio
async def test_twilio_send_leaves_the_event_loop_free(twilio, cache):
    twilio.delay = 0.5
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await open_sms(twilio_settings(twilio), cache).send(US, "slow")
    ticker.cancel()
    assert ticks >= 10  # ~50 when the send runs in a thread; 0 if it blocked the loop


# --- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"provider": "carrier-pigeon"}, "sms.provider: unknown provider 'carrier-pigeon' (expected one of outbox, twilio)"),
        ({"provider": "twilio"}, "sms.twilio: account_sid and auth_token required when sms.provider is 'twilio'"),
        ({"provider": "twilio", "twilio": {"account_sid": "AC1", "auth_token": "t"}},
         "sms.twilio: set 'from' (a Twilio number) or 'messaging_service_sid'"),
        ({"provider": "twilio", "twilio": {"account_sid": "AC1", "auth_token": "t", "from": "+1", "base_url": "localhost:1"}},
         "sms.twilio.base_url must be an http(s) URL, not 'localhost:1'"),
        ({"provider": "twilio", "twilio": {"account_sid": "AC1", "auth_token": "t", "from": "+1", "timeout": 0}},
         "sms.twilio.timeout must be a positive number of seconds, not 0"),
        ({"allowed_countries": ["US", "XX"]}, "sms.allowed_countries: unknown country code(s) XX"),
        ({"allowed_countries": "US"}, "sms.allowed_countries must be a list of ISO codes, not 'US'"),
        ({"provider": "twilio", "twilio": {"account_sid": "AC1", "auth_token": "t", "from": "+1"}},
         "sms.allowed_countries: required when sms.provider is 'twilio' (the ISO codes of the countries "
         "the app may text, e.g. [US]): texting every country invites SMS-pumping fraud"),
        ({"keep": 0}, "sms.keep must be a positive integer, not 0"),
        ({"limits": {"per_week": 5}},
         "sms.limits must have per_hour, per_day and/or per_prefix_per_day, not {'per_week': 5}"),
        ({"limits": {"per_day": 0}}, "sms.limits.per_day must be a whole number from 1, or null for no limit, not 0"),
        ({"limits": {"per_hour": 0}}, "sms.limits.per_hour must be a whole number from 1, or null for no limit, not 0"),
        ({"limits": {"per_prefix_per_day": "20"}},
         "sms.limits.per_prefix_per_day must be a whole number from 1, or null for no limit, not '20'"),
    ],
)
def test_bad_settings_fail_when_the_provider_is_opened(settings, message):
    with pytest.raises(ValueError) as caught:
        open_sms(settings, cache=None)
    assert str(caught.value) == message


# --- the send-sms node --------------------------------------------------------------------


def node_context(sms, cache) -> RunContext:
    return RunContext(Services(cache=cache, sms=sms), scope={}, flow="t")


@pytest.mark.anyio
async def test_send_sms_node_sends_and_continues(twilio, cache):
    ctx = node_context(open_sms(twilio_settings(twilio), cache), cache)
    output, value = await send_sms(ctx, {"to": f" {US} ", "body": "Your code is 1"})
    assert output == "next" and value["to"] == US
    assert twilio.requests[0]["form"]["To"] == US


@pytest.mark.anyio
async def test_send_sms_node_raises_flow_errors_for_its_error_output(twilio, cache):
    ctx = node_context(open_sms(twilio_settings(twilio), cache), cache)
    with pytest.raises(FlowError, match="could not be sent"):
        await send_sms(ctx, {"to": INVALID_NUMBER, "body": "hi"})
    with pytest.raises(FlowError) as caught:
        await send_sms(ctx, {"to": None, "body": "hi"})
    assert (caught.value.code, caught.value.status) == ("invalid_recipient", 400)


@pytest.mark.anyio
async def test_a_failed_send_takes_the_nodes_error_edge(twilio, cache):
    flow = text_flow()
    services = Services(cache=cache, sms=open_sms(twilio_settings(twilio), cache))
    sent = await run_flow(flow, services, {"params": {"query": {"phone": US}}})
    failed = await run_flow(flow, services, {"params": {"query": {"phone": INVALID_NUMBER}}})
    assert sent.status == 200 and sent.body["to"] == US
    assert failed.status == 502
    assert failed.body["errors"][0]["message"] == "The SMS could not be sent (Twilio error 21211)"


@pytest.mark.anyio
async def test_retry_retries_a_busy_twilio_but_not_a_refused_number(twilio, cache):
    flow = text_flow(TEXT_FLOW.replace("    error: failed", "    retry: { attempts: 3, backoff: 10ms }\n    error: failed"))
    services = Services(cache=cache, sms=open_sms(twilio_settings(twilio), cache))
    twilio.busy = 2  # two 503s, then Twilio takes the message
    sent = await run_flow(flow, services, {"params": {"query": {"phone": US}}})
    assert sent.status == 200 and [r["form"]["To"] for r in twilio.requests] == [US] * 3
    twilio.requests.clear()
    refused = await run_flow(flow, services, {"params": {"query": {"phone": INVALID_NUMBER}}})
    assert refused.body["errors"][0]["message"] == "The SMS could not be sent (Twilio error 21211)"
    assert len(twilio.requests) == 1  # 21211 will never pass: no second try


def text_flow(text: str = "") -> Any:
    registry = Registry()
    for module in ("flowengine_nodes.messaging", "flowengine_nodes.responses"):
        registry.add_module(module)
    flow, problems = compile_flow(loads(text or TEXT_FLOW, "flows/text.yaml"), registry, {})
    assert problems == []
    return flow


TEXT_FLOW = """
service: textCode
start: textCode
nodes:
  textCode:
    type: send-sms
    to: params.query.phone
    body: "Your code is {{ 123456 }}"
    next: sent
    error: failed
  sent:
    type: return-success
    body: textCode
  failed:
    type: return-error
    status: 502
    code: sms_failed
    message: "{{ error.message }} (Twilio error {{ error.details.provider_code }})"
"""
