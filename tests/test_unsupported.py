"""What the expression language deliberately refuses: the sandbox corpus.

Each attempt must raise ``ExpressionError`` with the intended message, at load time where
the text alone shows the problem ("compile") or else when evaluated ("evaluate"); never
another exception, never a hang (each attempt runs in a thread given 5 seconds).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flowengine.expressions import ExpressionError, compile_expression, compile_template

TIMEOUT = 5.0
BIG = "x" * 60_000  # a large but legal text in a run's data


class Secretive:
    """A Python object that found its way into a run's data; its attributes must stay out of reach."""

    touched = False

    def __init__(self) -> None:
        self.name = "object"

    @property
    def secret(self) -> str:
        Secretive.touched = True
        return "s3cret"

    def format(self) -> str:
        Secretive.touched = True
        return "formatted"


def _scope() -> dict[str, Any]:
    return {
        "x": {"a": 1, "format": None},
        "text": "abc {}",
        "items": [1, 2, 3],
        "a": 1,
        "b": [1],
        "big": BIG,
        "many": list(range(6_000)),
        "infinite": float("inf"),  # Python's json reads `Infinity` in a request body
        "obj": Secretive(),
        "fn": len,
        "params": {"body": {"fn": "LOWER"}},
    }


def attempt(source: str, phase: str, *, template: bool = False, quoted: str = "") -> ExpressionError:
    """Compile, then evaluate, in a thread with a deadline; return the ExpressionError raised.

    The message must quote ``quoted``: by default the start of the source (a template's
    errors quote the hole).
    """
    compile_ = compile_template if template else compile_expression
    outcome: dict[str, Any] = {}

    def run() -> None:
        stage = "compile"
        try:
            compiled = compile_(source)
            stage = "evaluate"
            outcome["value"] = compiled.evaluate(_scope())
        except BaseException as exc:  # noqa: BLE001 - the test reports whatever escaped
            outcome["error"], outcome["stage"] = exc, stage

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive(), f"{source[:60]!r} still running after {TIMEOUT} s"
    assert "value" not in outcome, f"{source[:60]!r} was accepted, giving {outcome['value']!r:.80}"
    error = outcome["error"]
    assert isinstance(error, ExpressionError), f"{source[:60]!r} raised {type(error).__name__}: {error}"
    assert outcome["stage"] == phase, f"{source[:60]!r} failed at {outcome['stage']}: {error}"
    assert f"in expression '{quoted or source[:20]}" in str(error), "the message names the expression"
    return error


# (source, phase, intended message fragment)
CORPUS = [
    # Python internals through attributes and names
    ("().__class__", "compile", "the field name '__class__' is not allowed"),
    ("''.__class__.__mro__", "compile", "the field name '__mro__' is not allowed"),
    ("x.__globals__", "compile", "the field name '__globals__' is not allowed"),
    ("obj.__dict__", "compile", "the field name '__dict__' is not allowed"),
    ("fn.__self__.open", "compile", "the field name '__self__' is not allowed"),
    ("x.__ｃｌａｓｓ__", "compile", "the field name '__class__' is not allowed"),  # NFKC folding
    ("__builtins__", "compile", "the name '__builtins__' is not allowed"),
    ("[__loader__][0]", "compile", "the name '__loader__' is not allowed"),
    # builtins and imports
    ("__import__('os')", "compile", "unknown function '__import__'"),
    ("import os", "compile", "syntax error: invalid syntax"),
    ("exec('1')", "compile", "unknown function 'exec'"),
    ("ｅｘｅｃ('1')", "compile", "unknown function 'exec'"),
    ("eval('1')", "compile", "unknown function 'eval'"),
    ("open('/etc/passwd')", "compile", "unknown function 'open'"),
    ("getattr(x, 'y')", "compile", "unknown function 'getattr'"),
    ("globals()", "compile", "unknown function 'globals'"),
    # Python constructs outside the language
    ("lambda: 1", "compile", "lambda functions not supported"),
    ("IF(true, lambda: 1, 2)", "compile", "lambda functions not supported"),
    ("[v for v in items]", "compile", "comprehensions not supported"),
    ("{v: 1 for v in items}", "compile", "comprehensions not supported"),
    ("{v for v in items}", "compile", "comprehensions not supported"),
    ("(v for v in items)", "compile", "comprehensions not supported"),
    ("SUM(v for v in items)", "compile", "comprehensions not supported"),
    ("(y := 1)", "compile", "assignment not supported"),
    ("f'{x}'", "compile", "f-strings not supported"),
    ("1 if a else 2", "compile", "'x if y else z' (use IF) not supported"),
    ("(1, 2)", "compile", "tuples not supported"),
    ("{1, 2}", "compile", "sets not supported"),
    ("{a: 1}", "compile", "object keys must be quoted text"),
    ("await x", "compile", "await not supported"),
    ("(yield)", "compile", "yield not supported"),
    ("b'bytes'", "compile", "the literal b'bytes' is not supported"),
    ("1j", "compile", "the literal 1j is not supported"),
    ("...", "compile", "the literal Ellipsis is not supported"),
    # calls that are not library functions
    ("'abc'.upper()", "compile", "only library functions can be called, like LOWER(x)"),
    ("text.format(1)", "compile", "only library functions can be called"),
    ("obj.format()", "compile", "only library functions can be called"),
    ("params.body.fn('A')", "compile", "only library functions can be called"),
    ("fn(items)", "compile", "unknown function 'fn'"),
    ("a(1)", "compile", "unknown function 'a'"),
    ("LOWER(x=1)", "compile", "LOWER: named arguments are not supported"),
    ("LOWER(**x)", "compile", "LOWER: named arguments are not supported"),
    ("LOWER(*b)", "compile", "'*' unpacking not supported"),
    ("[*b]", "compile", "'*' unpacking not supported"),
    ("*b", "compile", "syntax error"),
    # operators outside the language
    ("items[1:2]", "compile", "slices not supported"),
    ("items[::-1]", "compile", "slices not supported"),
    ("~1", "compile", "unexpected character '~' at position 1"),
    ("1 & 2", "compile", "'&' not supported"),
    ("1 | 2", "compile", "'|' not supported"),
    ("1 ^ 2", "compile", "'^' not supported"),
    ("1 << 2", "compile", "'<<' not supported"),
    ("1 >> 2", "compile", "'>>' not supported"),
    ("1 // 2", "compile", "'//' not supported"),
    ("a @ b", "compile", "'@' not supported"),
    ("a is b", "compile", "'is' not supported"),
    ("a is not b", "compile", "'is not' not supported"),
    ("a in b", "compile", "'in' (use IN or INCLUDES) not supported"),
    ("a not in b", "compile", "'not in' not supported"),
    # statements and injection
    ("1; 2", "compile", "unexpected character ';' at position 2"),
    ("a; import os", "compile", "unexpected character ';'"),
    ("1\nimport os", "compile", "syntax error: invalid syntax"),
    ("a\n__import__('os').system('id')", "compile", "syntax error"),
    ("'a' \\\n + 'b'", "compile", "unexpected character '\\'"),
    ("x = 1", "compile", "syntax error"),
    # Python attributes of objects in the run's data
    ("obj.secret", "evaluate", "cannot read field 'secret' of Secretive"),
    ("obj.name", "evaluate", "cannot read field 'name' of Secretive"),
    ("obj['secret']", "evaluate", "cannot index Secretive"),
    ("text.format", "evaluate", "cannot read field 'format' of text"),
    ("items.append", "evaluate", "cannot read field 'append' of a list"),
    ("fn.name", "evaluate", "cannot read field 'name' of builtin_function_or_method"),
    ("'%s' % text", "evaluate", "'%' expects numbers, got text"),
    # huge values
    ("'a' * 10**9", "evaluate", "'*' works on numbers only"),
    ("[1] * 10**9", "evaluate", "'*' works on numbers only"),
    ("9**9**9", "evaluate", "an exponent above 1000 is not allowed"),
    ("10**10000", "evaluate", "an exponent above 1000 is not allowed"),
    ("2**100000", "evaluate", "an exponent above 1000 is not allowed"),
    ("2**999", "evaluate", "the number is too large"),
    ("(-2) ** 999", "evaluate", "the number is too large"),
    ("0.5 ** -1000", "evaluate", "the number is too large"),
    ("(-8) ** 0.5", "evaluate", "a negative number to a fractional power has no real result"),
    ("1e99 * 1e99", "evaluate", "the number is too large"),
    ("infinite + 1", "evaluate", "the number is too large"),
    ("infinite - infinite", "evaluate", "the number is too large"),  # NaN
    ("infinite ** 0.5 * 0", "evaluate", "the number is too large"),
    ("1e400", "compile", "the number is too large"),
    ("1" + "0" * 101, "compile", "the number is too large"),
    ("1" + "0" * 5_000, "compile", "syntax error"),
    ("big + big", "evaluate", "the result is too large"),
    ("'a' + big + big", "evaluate", "the result is too large"),
    ("(big + 'a') + big", "evaluate", "the result is too large"),
    ("many + many", "evaluate", "the result is too large"),
    ("REPEAT(big, 10**6)", "evaluate", "limit is 100,000"),
    # deep nesting and huge sources
    ("(" * 1000, "compile", "syntax error: too many nested parentheses"),
    ("(" * 1000 + "1" + ")" * 1000, "compile", "syntax error: too many nested parentheses"),
    ("[" * 500, "compile", "syntax error: too many nested parentheses"),
    ("[" * 500 + "]" * 500, "compile", "syntax error: too many nested parentheses"),
    ("{'a': " * 300 + "1" + "}" * 300, "compile", "syntax error: too many nested parentheses"),
    ("-" * 10_000 + "1", "compile", "longer than 10000 characters"),
    ("-" * 5_000 + "1", "compile", "too complex to parse"),
    ("-" * 100 + "1", "compile", "nested deeper than 60 levels"),
    ("!" * 5_000 + "true", "compile", "too complex to parse"),
    ("!" * 100 + "true", "compile", "nested deeper than 60 levels"),
    ("LOWER(" * 100 + "'a'" + ")" * 100, "compile", "nested deeper than 60 levels"),
    ("x" + ".a" * 100, "compile", "nested deeper than 60 levels"),
    ("+".join(["1"] * 3_000), "compile", "too complex to parse"),
    ("1+" * 5_001 + "1", "compile", "longer than 10000 characters"),
    ("'" + "a" * 10_001 + "'", "compile", "longer than 10000 characters"),
]


@pytest.mark.parametrize(
    ("source", "phase", "message"), CORPUS, ids=[f"{i:03d}-{s[:30]}" for i, (s, _, _) in enumerate(CORPUS)]
)
def test_rejected(source: str, phase: str, message: str) -> None:
    error = attempt(source, phase)
    assert message in error.message


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25


def test_object_attributes_are_never_read() -> None:
    Secretive.touched = False
    for source in ("obj.secret", "obj.format", "obj['secret']", "'x' + obj.secret"):
        attempt(source, "evaluate")
    assert Secretive.touched is False


def test_dunder_keys_in_data_are_only_data() -> None:
    # `x['__class__']` is a lookup in a JSON object, never an attribute: it finds nothing.
    assert compile_expression("x['__class__']").evaluate({"x": {"a": 1}}) is None
    assert compile_expression("x['__class__']").evaluate({"x": {"__class__": "data"}}) == "data"
    with pytest.raises(ExpressionError, match="an index must be a whole number, got text '__class__'"):
        compile_expression("x['__class__']").evaluate({"x": "text"})


@pytest.mark.parametrize(
    ("source", "phase", "message", "quoted"),
    [
        ("{{ big }}{{ big }}", "evaluate", "the rendered text is too large", "{{ big }}{{ big }}"),
        ("{{ big }} and {{ big + 'a' }}", "evaluate", "the rendered text is too large", "{{ big }} and"),
        ("{{ big + big }}", "evaluate", "the result is too large", "big + big'"),
        ("Hi {{ ().__class__ }}", "compile", "the field name '__class__' is not allowed", "().__class__'"),
        ("Hi {{ __import__('os') }}", "compile", "unknown function '__import__'", "__import__('os')'"),
        ("Hi {{ 9**9**9 }}", "evaluate", "an exponent above 1000 is not allowed", "9**9**9'"),
        ("Hi {{ name", "compile", "'{{' is never closed with '}}'", "Hi {{ name'"),
    ],
)
def test_rejected_in_templates(source: str, phase: str, message: str, quoted: str) -> None:
    error = attempt(source, phase, template=True, quoted=quoted)
    assert message in error.message


def test_one_large_text_is_still_fine() -> None:
    assert compile_expression("big + 'a'").evaluate({"big": BIG}) == BIG + "a"
    assert compile_template("{{ big }}!").render({"big": BIG}) == BIG + "!"
