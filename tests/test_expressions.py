"""The expression language: Altogic operators and precedence, values, names, templates.

Precedence cases are chosen so that the result differs if the levels were swapped; the
comment on each says what the wrong reading would give. The sandbox corpus (what must be
rejected) lives in ``test_unsupported.py``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from flowengine.expressions import (
    Expression,
    ExpressionError,
    compile_expression,
    compile_template,
    parse,
)


def ev(source: str, **scope: Any) -> Any:
    return compile_expression(source).evaluate(scope)


def error_of(source: str, **scope: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        ev(source, **scope)
    return caught.value


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("134", 134),
        ("56.98", 56.98),
        ("'single'", "single"),
        ('"double"', "double"),
        ("'2020-04-01T06:40:12.941+00:00'", "2020-04-01T06:40:12.941+00:00"),
        ("['a', 'b']", ["a", "b"]),
        ("[]", []),
        ("[1, [2, [3]], null]", [1, [2, [3]], None]),
        ("{'a': 1, \"b\": [true, null]}", {"a": 1, "b": [True, None]}),
        ("{}", {}),
        ("{'nested': {'deep': 'x'}}.nested.deep", "x"),
        ("[10, 20, 30][1]", 20),
    ],
)
def test_literals(source: str, expected: Any) -> None:
    assert ev(source) == expected


def test_constants_are_values_not_names() -> None:
    # A scope entry called `true` does not shadow the constant.
    assert ev("true", true=False) is True
    assert ev("null", null="x") is None


# --- precedence: ( ) " ' [ ]; unary + - !; * /; + -; < <= > >=; == !=; &&; || ------------

PRECEDENCE = [
    # ( ) over everything
    ("(1 + 2) * 3", {}, 9),  # wrong: 7
    ("!(true && false)", {}, True),  # wrong: (!true) && false = false
    ("(false || true) && false", {}, False),  # wrong: true
    ("(2 < 1) == false", {}, True),
    # quotes: operators inside text are text
    ("'1 + 2' + 3", {}, "1 + 23"),
    ("'a && b' + '!c'", {}, "a && b!c"),
    # [ ] index binds tighter than unary and binary operators
    ("-[1, 2][0]", {}, -1),
    ("![true, false][1]", {}, True),  # wrong: (![true, false])[1], an error
    ("[1, 2][0] + [1, 2][1] * 10", {}, 21),  # wrong: 30
    # unary over * /
    ("-2 * -3", {}, 6),
    ("!a == 5", {"a": 1}, False),  # wrong: !(1 == 5) = true
    ("!a == true", {"a": "text"}, False),  # wrong: !('text' == true) = true
    ("!false && false", {}, False),  # wrong: !(false && false) = true
    ("!true || true", {}, True),  # wrong: !(true || true) = false
    # unary minus over binary + -
    ("-2 + 3", {}, 1),  # wrong: -5
    ("- 2 - 3", {}, -5),  # wrong: 1
    ("+2 - +3", {}, -1),
    # * / over + -
    ("1 + 2 * 3", {}, 7),  # wrong: 9
    ("10 - 6 / 2", {}, 7),  # wrong: 2
    ("2 * 3 + 4 * 5", {}, 26),  # wrong: 70
    # left to right within a level
    ("10 - 4 - 3", {}, 3),  # wrong: 9
    ("8 / 4 / 2", {}, 1),  # wrong: 4
    ("2 * 3 / 6", {}, 1),
    ("1 + 2 + 'x'", {}, "3x"),  # wrong: '12x'
    ("'x' + 1 + 2", {}, "x12"),  # wrong: 'x3'
    # + - over < <= > >=
    ("1 + 2 < 2 + 2", {}, True),  # wrong: 1 + (2 < 2) + 2, an error
    ("'a' + 1 > 'a'", {}, True),  # 'a1' > 'a'
    ("10 - 5 >= 5", {}, True),
    # < <= > >= over == != (and no Python chaining)
    ("a < b == c", {"a": 1, "b": 2, "c": True}, True),  # chained: 1<2 and 2==true = false
    ("2 == 2 < 3", {}, False),  # Altogic: 2 == (2 < 3) = 2 == true; chained: true
    ("1 != 1 < 2", {}, True),  # Altogic: 1 != true; chained: false
    ("1 < 2 == 3 < 4", {}, True),
    ("2 < 1 != 3 < 4", {}, True),  # false != true
    ("3 > 2 > 1", {}, False),  # (3 > 2) > 1 is true > 1: different types; chained: true
    ("2 == 2 == true", {}, True),  # (2 == 2) == true; chained: 2 == true = false
    ("1 <= 1 == true", {}, True),
    # == != over &&
    ("false == false && false", {}, False),  # wrong: false == (false && false) = true
    ("1 == 1 && 2 != 2", {}, False),
    ("x && y == z", {"x": False, "y": 1, "z": False}, False),  # wrong: (false && 1) == false
    # && over ||
    ("true || false && false", {}, True),  # wrong: (true || false) && false = false
    ("x || y && z", {"x": True, "y": False, "z": False}, True),
    ("false && true || true", {}, True),
    ("false && (true || true)", {}, False),
    # || lowest, left to right
    ("false || false || true", {}, True),
    ("1 > 2 || 3 > 2 && 'a' == 'a'", {}, True),
]


@pytest.mark.parametrize(("source", "scope", "expected"), PRECEDENCE)
def test_precedence(source: str, scope: dict[str, Any], expected: Any) -> None:
    assert ev(source, **scope) == expected


def test_precedence_with_library_functions() -> None:
    assert ev("SIZE([45, 26, 94, 73]) == 4") is True  # the Altogic docs' example
    assert ev("SIZE([1, 2]) * 2 + 1") == 5
    assert ev("!ISEMPTY(name) && LOWER(name) == 'ada'", name="ADA") is True
    assert ev("!ISEMPTY(name) && LOWER(name) == 'ada'", name="") is False
    assert ev("IF(n > 1, 'many', 'one') + ' item'", n=3) == "many item"
    assert ev("(INCLUDES(name, 'x') || INCLUDES(mail, 'x')) && !EXISTS(member)",
              name="ab", mail="x@y", member=None) is True  # fmt: skip
    assert ev("'Code: ' + ROUND(2.5) * 2") == "Code: 6"


def test_not_binds_to_its_operand_inside_function_arguments() -> None:
    assert ev("IF(!ok, 'no', 'yes')", ok=False) == "no"
    assert ev("NOT(!ok)", ok=True) is True


def test_altogic_docs_query_examples() -> None:
    item = {"quantity": 150, "type": "plastic", "weight": 10, "volume": 4}
    assert ev("quantity > 100 && quantity < 200 && type == \"plastic\"", **item) is True
    assert ev("(weight / volume > 2 && type == 'metal') || quantity == 150", **item) is True


# --- logic --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("!0", True),
        ("!''", True),
        ("!null", True),
        ("![]", True),
        ("!'text'", False),
        ("!!1", True),
        ("!-1", False),
    ],
)
def test_not_uses_truthiness(source: str, expected: bool) -> None:
    assert ev(source) is expected


def test_and_or_short_circuit() -> None:
    # The right side would fail if it were evaluated.
    assert not ev("false && 1 / 0 == 1")
    assert ev("true || 1 / 0 == 1")
    assert not ev("user != null && user.age > 18", user=None)


def test_not_equal_operator_is_not_mistaken_for_not() -> None:
    assert ev("a != b", a=1, b=2) is True
    assert ev("a!=b", a=1, b=1) is False
    assert ev("!a!=b", a=False, b=True) is False


# --- + joins text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "scope", "expected"),
    [
        ("'Result : ' + (10*5+100)", {}, "Result : 150"),
        ("150 + ' : Result'", {}, "150 : Result"),
        ("'n=' + 2.0", {}, "n=2"),  # integral floats print without '.0'
        ("'n=' + 6 / 2", {}, "n=3"),
        ("'n=' + 2.5", {}, "n=2.5"),
        ("'n=' + -0.5", {}, "n=-0.5"),
        ("'a' + null", {}, "a"),
        ("null + 'a'", {}, "a"),
        ("'a' + missing.field + 'b'", {}, "ab"),
        ("'flag: ' + true", {}, "flag: true"),
        ("false + '!'", {}, "false!"),
        ("'list: ' + [1, 'a']", {}, 'list: [1,"a"]'),
        ("'obj: ' + o", {"o": {"a": 1}}, 'obj: {"a":1}'),
        ("first + ' ' + last", {"first": "Ada", "last": "Lovelace"}, "Ada Lovelace"),
        ("[1] + [2, 3]", {}, [1, 2, 3]),
        ("1 + 2", {}, 3),
        ("0.1 + 0.2 > 0.3", {}, True),
    ],
)
def test_plus(source: str, scope: dict[str, Any], expected: Any) -> None:
    assert ev(source, **scope) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("null + 1", "'+' expects numbers, got null"),
        ("true + 1", "'+' expects numbers, got a boolean"),
        ("[1] + 1", "'+' expects numbers, got a list"),
        ("'a' - 1", "'-' expects numbers, got text"),
        ("-'a'", "'-' expects numbers, got text"),
        ("'a' * 2", "'*' works on numbers only"),
        ("2 / 'a'", "'/' expects numbers, got text"),
    ],
)
def test_arithmetic_on_wrong_types_is_a_clean_error(source: str, message: str) -> None:
    error = error_of(source)
    assert error.message == message
    assert error.source == source


# --- text literals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"'it\'s'", "it's"),
        (r'"say \"hi\""', 'say "hi"'),
        ("\"it's\"", "it's"),
        ("'say \"hi\"'", 'say "hi"'),
        ("'a && b || !c'", "a && b || !c"),
        ('"!= == ! && ||"', "!= == ! && ||"),
        ("'x' + '&&' + \"||\" + '!'", "x&&||!"),
        (r"'back\\slash'", "back\\slash"),
        ("'~;'", "~;"),
        ("'{{ not a hole }}'", "{{ not a hole }}"),
        ("''", ""),
    ],
)
def test_text_literals_are_untouched(source: str, expected: str) -> None:
    assert ev(source) == expected


def test_unclosed_text_is_a_syntax_error() -> None:
    assert error_of("'abc").message == "text starting at position 1 is never closed"
    assert error_of(r"'abc\'").message == "text starting at position 1 is never closed"


# --- names, fields, indexes ---------------------------------------------------------------

DATA = {
    "params": {"query": {"phoneNumber": "+14155552671"}, "body": {"tags": ["a", "b"]}},
    "user": {"profile": {"address": {"city": "Paris"}}, "emails": [{"value": "a@x.io"}]},
    "items": [10, 20, 30],
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("params.query.phoneNumber", "+14155552671"),
        ("user.profile.address.city", "Paris"),
        ("user.emails[0].value", "a@x.io"),
        ("params.body.tags[1]", "b"),
        ("params['query']['phoneNumber']", "+14155552671"),
        ("items[-1]", 30),
        ("items[6 / 3]", 30),  # `/` gives 2.0: a whole number still indexes
        ("'abc'[1]", "b"),
        # missing → null, and null-safe all the way down
        ("params.query.missing", None),
        ("nobody", None),
        ("nobody.name", None),
        ("nobody.a.b.c.d", None),
        ("user.profile.phone.number", None),
        ("user.emails[5].value", None),
        ("items[3]", None),
        ("items[-4]", None),
        ("'abc'[3]", None),
        ("nobody[0]", None),
        ("nobody[0].x[1]", None),
        ("params['nope']", None),
        ("params[0]", None),  # an object read by a number has no such field
        ("[][0]", None),
    ],
)
def test_field_access(source: str, expected: Any) -> None:
    assert ev(source, **DATA) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("items.length", "cannot read field 'length' of a list"),
        ("params.query.phoneNumber.length", "cannot read field 'length' of text"),
        ("items[0].x", "cannot read field 'x' of a number"),
        ("items['a']", "an index must be a whole number, got text 'a'"),
        ("items[1.5]", "an index must be a whole number, got number 1.5"),
        ("items[true]", "an index must be a whole number, got boolean true"),
        ("items[0][0]", "cannot index a number"),
    ],
)
def test_field_access_on_wrong_types_is_a_clean_error(source: str, message: str) -> None:
    assert error_of(source, **DATA).message == message


def test_names_excludes_functions_and_constants() -> None:
    expression = compile_expression(
        "ISMOBILEPHONE(params.query.phoneNumber) && !user.phoneVerified && LOWER(x) != null"
        " || true && [a, {'k': b}][0] == false"
    )
    assert expression.names == {"params", "user", "x", "a", "b"}
    assert compile_expression("NOW()").names == frozenset()
    assert compile_expression("'text' + 1").names == frozenset()


def test_paths_lists_every_dotted_read() -> None:
    expression = compile_expression(
        "ISMOBILEPHONE(params.query.phoneNumber) && session.userId == user.profile.id"
        " && makeCode.items[0].code == x"
    )
    full = {
        ("params", "query", "phoneNumber"),
        ("session", "userId"),
        ("user", "profile", "id"),
        ("makeCode", "items"),  # a path stops at an index
    }
    assert expression.paths >= full
    # Anything else reported is a prefix of a full path (reading a.b.c reads a.b too).
    assert all(any(p == f[: len(p)] for f in full) for p in expression.paths)
    assert compile_expression("x").paths == frozenset()


def test_parse_returns_the_checked_tree() -> None:
    tree = parse("a < b == c")
    expression = Expression.from_tree(tree, "a < b == c")
    assert expression.evaluate({"a": 1, "b": 2, "c": True}) is True


# --- comparisons --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "1 < 'a'",
        "'a' >= 1",
        "'10' > 9",
        "null < 1",
        "null >= 0",
        "1 <= null",
        "[1] < 1",
        "{'a': 1} < {'a': 2}",
        "true > 0",
        "1 <= true",
        "1 == '1'",
        "1 == true",
        "0 == false",
        "null == false",
        "null == 0",
        "'' == null",
        "[1] == [true]",
        "{'a': 1} == {'a': true}",
        "[] == {}",
    ],
)
def test_mismatched_types_compare_false(source: str) -> None:
    assert ev(source) is False
    if "==" in source:
        assert ev(source.replace("==", "!=")) is True


@pytest.mark.parametrize(
    "source",
    [
        "1 == 1.0",
        "null == null",
        "missing == null",
        "'abc' == \"abc\"",
        "[1, 'a', [null]] == [1.0, 'a', [null]]",
        "{'a': [1], 'b': 'x'} == {'b': 'x', 'a': [1]}",
        "true == true",
        "'b' > 'a'",
        "'2026-01-02' > '2026-01-01'",
        "2.5 >= 2",
        "-1 < 0",
    ],
)
def test_same_types_compare(source: str) -> None:
    assert ev(source) is True


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["1 / 0", "1 / (2 - 2)", "x / y", "5 % 0", "0 ** -1"])
def test_division_by_zero_is_a_clean_error(source: str) -> None:
    error = error_of(source, x=1, y=0)
    assert error.message == "division by zero"
    assert str(error) == f"division by zero in expression '{source}'"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("1 2", "syntax error: invalid syntax (at position 3)"),
        ("1 +* 2", "syntax error: invalid syntax (at position 4)"),
        ("(1 + 2", "syntax error: '(' was never closed (at position 1)"),
        ("a !", "syntax error: invalid syntax (at position 4)"),
        ("LOWR(x)", "unknown function 'LOWR' (did you mean 'LOWER'?)"),
        ("lower(x)", "unknown function 'lower' (did you mean 'LOWER'?)"),
        ("   ", "the expression is empty"),
    ],
)
def test_compile_errors_name_the_expression(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source)
    assert caught.value.message == message
    assert caught.value.source == source
    assert str(caught.value) == f"{message} in expression '{source}'"


def test_empty_expression_has_nothing_to_quote() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("")
    assert str(caught.value) == "the expression is empty"


def test_wrong_argument_count_is_a_compile_error() -> None:
    with pytest.raises(ExpressionError, match=r"LOWER takes 1 argument, got 2 in expression 'LOWER\(a, b\)'"):
        compile_expression("LOWER(a, b)")


def test_evaluation_errors_name_the_expression() -> None:
    expression = compile_expression("'total: ' + (order.price - 'x')")
    with pytest.raises(ExpressionError) as caught:
        expression.evaluate({"order": {"price": 3}})
    assert str(caught.value) == "'-' expects numbers, got text in expression ''total: ' + (order.price - 'x')'"


def test_function_errors_are_expression_errors_naming_the_expression() -> None:
    with pytest.raises(ExpressionError) as caught:
        ev("1 + SIZE(5)")
    assert "SIZE" in caught.value.message
    assert caught.value.source == "1 + SIZE(5)"


# --- a cached tree is evaluated many times ------------------------------------------------


def test_cached_tree_keeps_no_state_between_evaluations() -> None:
    expression = compile_expression("IF(user.name != null, 'Hi ' + user.name, 'Hi guest') + '#' + n")
    for n in range(500):
        if n % 3 == 0:
            scope: dict[str, Any] = {"n": n}  # no user at all
            expected = f"Hi guest#{n}"
        else:
            scope = {"user": {"name": f"u{n}"}, "n": n}
            expected = f"Hi u{n}#{n}"
        assert expression.evaluate(scope) == expected
        assert scope.keys() <= {"user", "n"}  # the scope is read, never written


def test_an_error_does_not_poison_the_next_evaluation() -> None:
    expression = compile_expression("a / b")
    assert expression.evaluate({"a": 6, "b": 3}) == 2
    with pytest.raises(ExpressionError, match="division by zero"):
        expression.evaluate({"a": 1, "b": 0})
    assert expression.evaluate({"a": 9, "b": 3}) == 3
    assert compile_expression("a").evaluate({}) is None  # no memory of an earlier scope


def test_concurrent_evaluations_of_one_expression_see_their_own_scope() -> None:
    """A node with a blocking call evaluates its params in worker threads, so one cached
    expression runs in several threads at once; each run must read only its own names."""
    barrier = threading.Barrier(2, timeout=5)

    def pause() -> str:
        barrier.wait()  # both runs have started before either reads `who`
        return ""

    expression = compile_expression("PAUSE() + who", {"PAUSE": pause})
    results: dict[str, Any] = {}

    def run(who: str) -> None:
        results[who] = expression.evaluate({"who": who})

    threads = [threading.Thread(target=run, args=(who,)) for who in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert results == {"alice": "alice", "bob": "bob"}


# --- blocking -----------------------------------------------------------------------------


def test_ecompare_marks_the_expression_blocking() -> None:
    assert compile_expression("ECOMPARE(params.body.password, user.password)").blocking is True
    assert compile_expression("user != null && ECOMPARE(p, h)").blocking is True
    assert compile_expression("LOWER(x) == 'a'").blocking is False
    assert compile_template("Hello {{ ECOMPARE(p, h) }}").blocking is True
    assert compile_template("Hello {{ name }}").blocking is False


def test_blocking_expressions_still_evaluate() -> None:
    # A malformed hash never matches and never fails (no bcrypt work is needed for that).
    assert ev("!ECOMPARE('secret', hash)", hash="not-a-hash") is True


# --- templates ----------------------------------------------------------------------------


def test_template_with_several_holes() -> None:
    template = compile_template("Hi {{ user.name }}, your code is {{ code.value }}.")
    assert template.render({"user": {"name": "Ada"}, "code": {"value": 123456}}) == (
        "Hi Ada, your code is 123456."
    )
    assert template.names == {"user", "code"}
    assert [e.source for e in template.expressions] == ["user.name", "code.value"]


def test_template_with_adjacent_holes() -> None:
    assert compile_template("{{a}}{{ b }}{{'-'}}{{ 1 + 2 }}").render({"a": "x", "b": "y"}) == "xy-3"


def test_template_without_holes_is_the_text() -> None:
    template = compile_template("phone-code: {not a hole} }} {")
    assert template.render({}) == "phone-code: {not a hole} }} {"
    assert template.names == frozenset()
    assert template.expressions == []
    assert compile_template("").render({}) == ""


def test_template_evaluate_is_render() -> None:
    assert compile_template("n={{ n }}").evaluate({"n": 2}) == "n=2"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (2.0, "2"),
        (2.5, "2.5"),
        (150, "150"),
        ([1, "a"], '[1,"a"]'),
        ({"a": 1}, '{"a":1}'),
        ("é", "é"),
    ],
)
def test_template_renders_values_with_the_library_text_rules(value: Any, text: str) -> None:
    assert compile_template("[{{ v }}]").render({"v": value}) == f"[{text}]"


def test_template_hole_uses_the_full_language() -> None:
    template = compile_template("{{ 'Result : ' + (10*5+100) }} / {{ !done && n > 1 }}")
    assert template.render({"done": False, "n": 2}) == "Result : 150 / true"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("Hello {{ name", "'{{' is never closed with '}}'"),
        ("{{ a }} and {{ b", "'{{' is never closed with '}}'"),
        ("Hello {{ }}", "the expression is empty"),
        ("Hello {{ 1 2 }}", "syntax error: invalid syntax (at position 3)"),
    ],
)
def test_template_errors(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_template(source)
    assert caught.value.message == message


def test_template_evaluation_error_names_the_hole() -> None:
    template = compile_template("Total: {{ price * 'x' }}")
    with pytest.raises(ExpressionError) as caught:
        template.render({"price": 2})
    assert str(caught.value) == "'*' works on numbers only in expression 'price * 'x''"


def test_template_must_be_text() -> None:
    with pytest.raises(ExpressionError, match="a template must be text, got a number"):
        compile_template(5)  # type: ignore[arg-type]


def test_cached_template_renders_many_scopes() -> None:
    template = compile_template("{{ n }}:{{ IF(n > 50, 'big', 'small') }}")
    for n in range(100):
        assert template.render({"n": n}) == f"{n}:{'big' if n > 50 else 'small'}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [("null || 'd'", True), ("'a' && 'b'", True), ("1 && 0", False), ("0 || ''", False)],
)
def test_logical_operators_answer_true_or_false_like_altogic(source, expected):
    assert compile_expression(source).evaluate({}) is expected
