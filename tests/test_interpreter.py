"""The interpreter: routing, names, limits, failures, traces and isolation of runs.

Each test writes a small app (``app.yaml`` plus one flow) into a temporary folder and loads it
with the real loader, so the flows are checked and compiled exactly as a served app's are.
Misbehaving nodes (``sleep``, ``boom``, ``fail``, ``flaky``) come from the test node module
``tests/apps/http_demo/http_demo_nodes.py``, registered through ``node_modules``.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from flowengine.context import Services
from flowengine.errors import FlowError
from flowengine.graph import Flow
from flowengine.interpreter import run_flow
from flowengine.spec.app import load_app
from flowengine.types import Reply

DEMO_APP = Path(__file__).parent / "apps" / "http_demo"

pytestmark = pytest.mark.anyio

MakeFlow = Callable[[str], Flow]


@pytest.fixture
def make_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MakeFlow:
    """Write ``flow_yaml`` as the only flow of an app with the test node types; load it."""
    monkeypatch.syspath_prepend(str(DEMO_APP))
    (tmp_path / "flows").mkdir()
    (tmp_path / "app.yaml").write_text("name: t\nnode_modules: [http_demo_nodes]\n")

    def make(flow_yaml: str) -> Flow:
        (tmp_path / "flows" / "f.yaml").write_text(textwrap.dedent(flow_yaml))
        (flow,) = load_app(tmp_path).flows.values()
        return flow

    return make


@pytest.fixture
def flaky_calls(make_flow: MakeFlow):
    from http_demo_nodes import ATTEMPTS  # importable once make_flow has set the path

    ATTEMPTS.clear()
    return ATTEMPTS


def names(query: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A run's names as the HTTP layer builds them."""
    params = {"query": query or {}, "path": {}, "headers": {}, "body": None}
    return {"params": params, "session": None, "user": None, "env": {}, **extra}


async def run(flow: Flow, scope: dict[str, Any] | None = None, **options: Any) -> Any:
    result = await run_flow(flow, Services(), scope if scope is not None else names(), **options)
    return result.body if isinstance(result, Reply) else result


# --- results, routing, names ---------------------------------------------------------------


async def test_a_node_result_is_visible_to_later_nodes_by_id(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: totals
        start: calc
        nodes:
          calc:
            type: set
            values: { total: params.query.a + params.query.b, label: "'sum'" }
            next: more
          more:
            type: set
            values: { doubled: calc.total * 2 }
            next: done
          done:
            type: return-success
            body: { total: calc.total, label: calc.label, doubled: more.doubled }
        """
    )
    assert await run(flow, names({"a": 2, "b": 3})) == {"total": 5, "label": "sum", "doubled": 10}


CONDITION = """
    service: sign
    start: check
    nodes:
      check: { type: condition, if: params.query.n > 10, then: big, else: small }
      big: { type: return-success, body: "'big: ' + check" }
      small: { type: return-success, body: "'small: ' + check" }
"""


@pytest.mark.parametrize(("n", "answer"), [(11, "big: true"), (10, "small: false"), (-5, "small: false")])
async def test_condition_takes_then_or_else(make_flow: MakeFlow, n: int, answer: str) -> None:
    assert await run(make_flow(CONDITION), names({"n": n})) == answer


SWITCH = """
    service: size
    start: pick
    nodes:
      pick:
        type: switch
        cases: { small: params.query.n < 10, medium: params.query.n < 100 }
        small: answer
        medium: answer
        default: answer
      answer: { type: return-success, body: pick }
"""


@pytest.mark.parametrize(
    ("n", "output"),
    [(5, "small"), (50, "medium"), (500, "default")],
    ids=["first-true-case-wins", "second-case", "default"],
)
async def test_switch_takes_the_first_true_case(make_flow: MakeFlow, n: int, output: str) -> None:
    assert await run(make_flow(SWITCH), names({"n": n})) == output


NAMES = """
    service: who
    start: done
    nodes:
      done:
        type: return-success
        body:
          query: params.query.q
          path: params.path.id
          header: params.headers['x-trace']
          body: params.body.note
          session: session.userId
          user: user.email
          env: env.region
"""


@pytest.mark.parametrize(
    ("session", "user", "expected"),
    [
        ({"userId": "u1"}, {"email": "a@b.co"}, {"session": "u1", "user": "a@b.co"}),
        (None, None, {"session": None, "user": None}),
    ],
    ids=["signed-in", "anonymous-reads-null"],
)
async def test_params_session_user_and_env_are_named(make_flow: MakeFlow, session, user, expected) -> None:
    scope = {
        "params": {"query": {"q": "hi"}, "path": {"id": 7}, "headers": {"x-trace": "t-1"}, "body": {"note": "n"}},
        "session": session,
        "user": user,
        "env": {"region": "eu"},
    }
    body = await run(make_flow(NAMES), scope)
    assert body == {"query": "hi", "path": 7, "header": "t-1", "body": "n", "env": "eu", **expected}


async def test_log_writes_its_rendered_message(make_flow: MakeFlow, caplog: pytest.LogCaptureFixture) -> None:
    flow = make_flow(
        """
        service: logs
        start: say
        nodes:
          say: { type: log, message: "hello {{ params.query.name }}", level: warning, next: done }
          done: { type: return-success, body: say }
        """
    )
    with caplog.at_level(logging.INFO, logger="flowengine.run"):
        assert await run(flow, names({"name": "Ada"})) == "hello Ada"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "hello Ada [logs/say]" in record.getMessage()


async def test_a_path_that_ends_without_a_response_fails(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: trailing
        start: calc
        nodes:
          calc: { type: set, values: { x: 1 } }
        """
    )
    with pytest.raises(FlowError) as caught:
        await run(flow)
    assert (caught.value.code, caught.value.status) == ("no_response", 500)


# --- limits ----------------------------------------------------------------------------------

LOOP = """
    service: spin
    start: tick
    nodes:
      tick: { type: set, values: { n: 1 }, next: again }
      again: { type: condition, if: "true", then: tick, else: done }
      done: { type: return-success }
"""


@pytest.mark.parametrize("limit", [1, 10, 1000])
async def test_a_loop_stops_at_the_step_limit(make_flow: MakeFlow, limit: int) -> None:
    flow = make_flow(LOOP)
    with pytest.raises(FlowError) as caught:
        await run(flow, step_limit=limit)
    assert (caught.value.code, caught.value.status) == ("step_limit_exceeded", 500)
    trace = flow.traces[-1]
    assert trace.result == "step limit"
    assert len(trace.steps) == limit


async def test_a_loop_of_nodes_that_never_await_still_obeys_its_time_limit(make_flow: MakeFlow) -> None:
    """With a huge step limit, only the caller's timeout can stop the loop, and while it
    spins the event loop must keep serving others."""
    flow = make_flow(LOOP)
    ticks = 0

    async def other_request() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    neighbour = asyncio.create_task(other_request())
    began = time.perf_counter()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await run(flow, step_limit=1_000_000)  # ~2 s of spinning if nothing stops it
    elapsed = time.perf_counter() - began
    neighbour.cancel()
    assert elapsed < 2, f"the timeout fired after {elapsed:.2f}s"
    assert ticks >= 5, "the spinning flow starved the event loop"
    assert flow.traces[-1].result == "cancelled"
    assert flow.traces[-1].steps[-1].error == "cancelled"


# --- failures ----------------------------------------------------------------------------------

ERROR_REPORT = "{ code: error.code, message: error.message, node: error.node, status: error.status }"


async def test_a_crash_takes_the_error_edge_without_leaking_the_exception(make_flow: MakeFlow) -> None:
    from http_demo_nodes import SECRET

    flow = make_flow(
        f"""
        service: crashes
        start: explode
        nodes:
          explode: {{ type: boom, error: handled, next: done }}
          done: {{ type: return-success }}
          handled: {{ type: return-success, body: {ERROR_REPORT} }}
        """
    )
    body = await run(flow)
    assert body["code"] == "internal_error" and body["node"] == "explode" and body["status"] == 500
    assert "error id" in body["message"] and SECRET not in body["message"]


async def test_a_crash_without_error_edge_goes_to_on_error(make_flow: MakeFlow) -> None:
    flow = make_flow(
        f"""
        service: crashes
        start: explode
        on_error: rescue
        nodes:
          explode: {{ type: boom, next: done }}
          done: {{ type: return-success }}
          rescue: {{ type: return-success, body: {ERROR_REPORT} }}
        """
    )
    body = await run(flow)
    assert (body["code"], body["node"]) == ("internal_error", "explode")


async def test_an_unhandled_crash_is_a_500_with_an_error_id_and_a_logged_traceback(
    make_flow: MakeFlow, caplog: pytest.LogCaptureFixture
) -> None:
    from http_demo_nodes import SECRET

    flow = make_flow(
        """
        service: crashes
        start: explode
        nodes:
          explode: { type: boom, next: done }
          done: { type: return-success }
        """
    )
    with caplog.at_level(logging.ERROR, logger="flowengine.interpreter"), pytest.raises(FlowError) as caught:
        await run(flow)
    error = caught.value
    assert (error.code, error.status, error.origin) == ("internal_error", 500, "server_error")
    error_id = error.details["errorId"]
    assert error_id in error.message and SECRET not in str(error.body())
    (record,) = caplog.records
    assert error_id in record.getMessage() and "explode" in record.getMessage()
    assert "Traceback" in caplog.text and f"RuntimeError: kaboom: {SECRET}" in caplog.text


FAILING = """
    service: refuses
    start: deny
    {on_error}
    nodes:
      deny: {{ type: fail, code: not_allowed, status: 403, message: "no {{{{ params.query.who }}}}", next: done{edge} }}
      done: {{ type: return-success }}
{handlers}
"""
HANDLED = f"      handled: {{ type: return-success, body: {ERROR_REPORT} }}"
RESCUE = "      rescue: { type: return-success, body: \"'rescued'\" }"
REPORT = {"code": "not_allowed", "message": "no bob", "node": "deny", "status": 403}


@pytest.mark.parametrize(
    ("edge", "on_error", "handlers", "expected"),
    [
        (", error: handled", "", [HANDLED], REPORT),
        (", error: handled", "on_error: rescue", [HANDLED, RESCUE], REPORT),
        ("", "on_error: rescue", [RESCUE], "rescued"),
    ],
    ids=["error-edge", "error-edge-wins-over-on_error", "on_error"],
)
async def test_a_flow_error_is_routed(make_flow: MakeFlow, edge, on_error, handlers, expected) -> None:
    flow = make_flow(FAILING.format(edge=edge, on_error=on_error, handlers="\n".join(handlers)))
    assert await run(flow, names({"who": "bob"})) == expected


async def test_an_unrouted_flow_error_keeps_its_code_and_status(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: refuses
        start: deny
        nodes:
          deny: { type: fail, code: not_allowed, status: 403, message: "no", next: done }
          done: { type: return-success }
        """
    )
    with pytest.raises(FlowError) as caught:
        await run(flow)
    assert (caught.value.code, caught.value.status) == ("not_allowed", 403)
    assert flow.traces[-1].result == "error: not_allowed"


async def test_a_failing_on_error_handler_does_not_loop(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: refuses
        start: deny
        on_error: rescue
        nodes:
          deny: { type: fail, code: first, next: done }
          rescue: { type: fail, code: second, next: done }
          done: { type: return-success }
        """
    )
    with pytest.raises(FlowError) as caught:
        await run(flow)
    assert caught.value.code == "second"
    assert [(s.node, s.error) for s in flow.traces[-1].steps] == [("deny", "first"), ("rescue", "second")]


async def test_an_expression_failing_at_run_time_names_the_node(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: badfield
        start: calc
        nodes:
          calc: { type: set, values: { x: params.query.n.digits }, next: done }
          done: { type: return-success }
        """
    )
    with pytest.raises(FlowError) as caught:
        await run(flow, names({"n": 5}))
    assert (caught.value.code, caught.value.details) == ("expression_error", {"node": "calc"})
    assert "params.query.n.digits" in caught.value.message


# --- timeouts and retries ---------------------------------------------------------------------


async def test_a_node_timeout_takes_the_error_path_when_it_expires(make_flow: MakeFlow) -> None:
    flow = make_flow(
        f"""
        service: slow
        start: wait
        nodes:
          wait: {{ type: sleep, seconds: 5, timeout: 0.2s, error: late, next: done }}
          done: {{ type: return-success, body: "'finished'" }}
          late: {{ type: return-success, body: {ERROR_REPORT} }}
        """
    )
    began = time.perf_counter()
    body = await run(flow)
    elapsed = time.perf_counter() - began
    assert (body["code"], body["node"], body["status"]) == ("node_timeout", "wait", 504)
    assert elapsed < 2, f"the 0.2s node timeout fired after {elapsed:.2f}s"


async def test_a_node_within_its_timeout_goes_on(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: quick
        start: wait
        nodes:
          wait: { type: sleep, seconds: 0.01, value: "'v'", timeout: 2s, next: done }
          done: { type: return-success, body: wait }
        """
    )
    assert await run(flow) == "v"


RETRY = """
    service: retries
    start: call
    nodes:
      call:
        type: flaky
        key: "{{{{ params.query.key }}}}"
        failures: {failures}
        status: {status}
        retry: {{ attempts: {attempts}, backoff: 5ms }}
        next: done
        error: gaveUp
      done: {{ type: return-success, body: {{ ok: call }} }}
      gaveUp: {{ type: return-success, body: {{ failed: error.code }} }}
"""


@pytest.mark.parametrize(
    ("failures", "status", "attempts", "body", "calls"),
    [
        (2, 503, 3, {"ok": 3}, 3),
        (0, 503, 3, {"ok": 1}, 1),
        (3, 503, 3, {"failed": "unavailable"}, 3),
        (2, 400, 3, {"failed": "unavailable"}, 1),
    ],
    ids=["succeeds-on-attempt-3", "first-try", "gives-up-after-3", "client-errors-are-not-retried"],
)
async def test_retry(make_flow: MakeFlow, flaky_calls, failures, status, attempts, body, calls) -> None:
    flow = make_flow(RETRY.format(failures=failures, status=status, attempts=attempts))
    assert await run(flow, names({"key": "k"})) == body
    assert flaky_calls["k"] == calls


async def test_a_timed_out_attempt_is_retried(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: retrySlow
        start: wait
        nodes:
          wait:
            type: sleep
            seconds: 5
            timeout: 50ms
            retry: { attempts: 2, backoff: 5ms }
            error: late
            next: done
          done: { type: return-success }
          late: { type: return-success, body: error.code }
        """
    )
    began = time.perf_counter()
    assert await run(flow) == "node_timeout"
    assert time.perf_counter() - began >= 0.1  # two attempts of 50 ms each


async def test_a_timeout_error_of_the_node_itself_is_a_crash_not_a_node_timeout(
    make_flow: MakeFlow, caplog: pytest.LogCaptureFixture
) -> None:
    """Without a ``timeout`` of its own, a node's TimeoutError (a library's) is a plain crash."""
    flow = make_flow(
        """
        service: ownTimeout
        start: call
        nodes:
          call: { type: boom, raises: TimeoutError, retry: { attempts: 2, backoff: 5ms }, next: done }
          done: { type: return-success }
        """
    )
    with caplog.at_level(logging.ERROR, logger="flowengine.interpreter"), pytest.raises(FlowError) as caught:
        await run(flow)
    assert caught.value.code == "internal_error"
    assert "TimeoutError: kaboom" in caplog.text and "format" not in caplog.text


# --- traces --------------------------------------------------------------------------------------


async def test_each_run_leaves_a_trace(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: traced
        start: calc
        nodes:
          calc: { type: set, values: { x: 1 }, next: check }
          check: { type: condition, if: calc.x == 1, then: deny, else: done }
          deny: { type: fail, code: nope, error: handled, next: done }
          done: { type: return-success }
          handled: { type: return-success, body: error.code }
        """
    )
    await run(flow)
    trace = flow.traces[-1]
    assert (trace.flow, trace.result) == ("traced", "ok")
    assert [(s.node, s.type, s.output, s.error) for s in trace.steps] == [
        ("calc", "set", "next", None),
        ("check", "condition", "then", None),
        ("deny", "fail", "error", "nope"),
        ("handled", "return-success", None, None),
    ]
    assert all(isinstance(s.micros, int) and s.micros >= 0 for s in trace.steps)


async def test_the_trace_buffer_is_bounded(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: many
        start: done
        nodes:
          done: { type: return-success, body: params.query.i }
        """
    )
    bound = flow.traces.maxlen
    assert bound is not None
    for i in range(bound + 50):
        await run(flow, names({"i": i}))
    assert len(flow.traces) == bound


# --- isolation -------------------------------------------------------------------------------------


async def test_concurrent_runs_of_one_flow_do_not_share_state(make_flow: MakeFlow) -> None:
    flow = make_flow(
        """
        service: double
        start: calc
        nodes:
          calc: { type: set, values: { n: params.query.n, doubled: params.query.n * 2 }, next: wait }
          wait: { type: sleep, seconds: 0.01, value: calc.doubled, next: check }
          check: { type: condition, if: wait == calc.n * 2, then: done, else: mixed }
          done: { type: return-success, body: { n: calc.n, doubled: wait, tag: "'run-' + params.query.n" } }
          mixed: { type: return-error, status: 500, message: "runs shared state" }
        """
    )
    bodies = await asyncio.gather(*(run(flow, names({"n": n})) for n in range(200)))
    assert bodies == [{"n": n, "doubled": 2 * n, "tag": f"run-{n}"} for n in range(200)]
