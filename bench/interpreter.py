"""Interpreter and expression overhead, side by side with plain Python.

    python bench/interpreter.py

1. A 10-node flow run by the interpreter vs. the same logic as one async Python function,
   both with expressions, then with constant params only (interpreter cost alone).
2. One expression evaluated from its cached tree vs. parsed again each time.
"""

from __future__ import annotations

import asyncio
import tempfile
import textwrap
import time
from pathlib import Path

from flowengine.context import Services
from flowengine.expressions import compile_expression
from flowengine.interpreter import run_flow
from flowengine.spec.app import load_app

FLOW = """
service: score
start: n1
nodes:
  n1: {type: set, values: {a: "params.body.x + 1"}, next: n2}
  n2: {type: set, values: {b: "n1.a * 2"}, next: n3}
  n3: {type: condition, if: "n2.b > 10", then: n4, else: n5}
  n4: {type: set, values: {c: "'big ' + n2.b"}, next: n6}
  n5: {type: set, values: {c: "'small ' + n2.b"}, next: n6}
  n6: {type: set, values: {d: "UPPER(n4.c)"}, next: n7}
  n7: {type: set, values: {e: "n1.a + n2.b"}, next: n8}
  n8: {type: condition, if: "n7.e >= 0", then: n9, else: n10}
  n9: {type: return-success, body: {d: n6.d, e: n7.e}}
  n10: {type: return-error, message: negative}
"""

CONSTANT_FLOW = """
service: constant
start: n1
nodes:
  n1: {type: set, values: {a: 1}, next: n2}
  n2: {type: set, values: {b: 2}, next: n3}
  n3: {type: condition, if: true, then: n4, else: n10}
  n4: {type: set, values: {c: 3}, next: n5}
  n5: {type: set, values: {c: 4}, next: n6}
  n6: {type: set, values: {d: 5}, next: n7}
  n7: {type: set, values: {e: 6}, next: n8}
  n8: {type: condition, if: true, then: n9, else: n10}
  n9: {type: return-success, body: {ok: true}}
  n10: {type: return-error, message: never}
"""


async def plain(x: int) -> dict:
    a = x + 1
    b = a * 2
    c = f"big {b}" if b > 10 else f"small {b}"
    d = c.upper()
    e = a + b
    if e >= 0:
        return {"d": d, "e": e}
    raise ValueError("negative")


async def plain_constant() -> dict:
    values = [{"a": 1}, {"b": 2}, True, {"c": 3}, {"c": 4}, {"d": 5}, {"e": 6}, True]
    return {"ok": all(values)}


def app_with(*flows: str):
    folder = Path(tempfile.mkdtemp())
    (folder / "flows").mkdir()
    (folder / "app.yaml").write_text("name: bench\n")
    for index, text in enumerate(flows):
        (folder / "flows" / f"f{index}.yaml").write_text(textwrap.dedent(text))
    return load_app(folder)


async def per_run(fn, runs: int) -> float:
    for _ in range(runs // 10):  # warm up
        await fn()
    began = time.perf_counter()
    for _ in range(runs):
        await fn()
    return (time.perf_counter() - began) / runs * 1e6


def per_call(fn, runs: int) -> float:
    began = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - began) / runs * 1e6


async def main() -> None:
    app = app_with(FLOW, CONSTANT_FLOW)
    services = Services()
    score, constant = app.flows["score"], app.flows["constant"]
    runs = 20_000

    def scope() -> dict:
        return {"params": {"body": {"x": 7}}, "session": None, "user": None, "env": {}}

    flow_us = await per_run(lambda: run_flow(score, services, scope()), runs)
    plain_us = await per_run(lambda: plain(7), runs)
    constant_us = await per_run(lambda: run_flow(constant, services, scope()), runs)
    plain_constant_us = await per_run(plain_constant, runs)
    steps = 9  # nodes executed per run (n1..n4, n6..n9)

    print("10-node flow (9 nodes executed per run)")
    print(f"  {'':34}{'µs/run':>10}{'ratio':>10}")
    print(f"  {'plain Python async function':34}{plain_us:10.2f}{1:10.1f}")
    print(f"  {'interpreter, with expressions':34}{flow_us:10.2f}{flow_us / plain_us:10.1f}")
    print(f"  {'plain Python, constants':34}{plain_constant_us:10.2f}{1:10.1f}")
    print(f"  {'interpreter, constants only':34}{constant_us:10.2f}{constant_us / plain_constant_us:10.1f}")
    print(f"  interpreter overhead per node, expressions aside: "
          f"{(constant_us - plain_constant_us) / steps:.2f} µs (goal ≤ 5 µs)")

    names = {"params": {"query": {"phone": "+14155552671", "x": 2}}, "user": {"name": "ada"}}
    for source in (
        "params.query.x + 1 == 3 && (user.name == 'ada' || LEN(user.name) > 2)",
        "ISMOBILEPHONE(params.query.phone) && LEN(user.name) > 2 || params.query.x + 1 == 3",
        "params.query.phone",
    ):
        cached = compile_expression(source)
        evaluations = 20_000
        cached_us = per_call(lambda: cached.evaluate(names), evaluations)
        parsed_us = per_call(lambda: compile_expression(source).evaluate(names), evaluations // 4)
        print()
        print(f"expression: {source}")
        print(f"  {'':34}{'µs/eval':>10}{'speed-up':>10}")
        print(f"  {'parse + evaluate each time':34}{parsed_us:10.2f}{1:10.1f}")
        print(f"  {'evaluate the cached tree':34}{cached_us:10.2f}{parsed_us / cached_us:10.1f}   (goal ≥ 5×)")


if __name__ == "__main__":
    asyncio.run(main())
