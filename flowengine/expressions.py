"""The expression language: Altogic syntax, parsed once, evaluated many times.

An expression such as ``ISMOBILEPHONE(params.query.phoneNumber) && !user.phoneVerified``
is translated to a Python expression tree at load time (``&&`` → ``and``, ``||`` → ``or``,
``!`` → ``not`` with the precedence of a unary operator, ``true``/``false``/``null``), checked
against a whitelist of tree nodes and the function library, and kept. Each run evaluates the
cached tree with ``simpleeval``'s walker, whose handlers are replaced here so that:

- names and dotted access read only the run's data (dicts, lists, text, numbers); there is
  no route to a Python attribute, so ``().__class__`` and friends have nothing to reach;
- ``+`` joins text when either side is text (``'Result: ' + 150``), as in Altogic;
- relational operators bind tighter than ``==``/``!=`` and comparisons never chain;
- text, list and number sizes are bounded, so no expression can exhaust memory or time.

Templates are text with ``{{ expr }}`` holes, each hole an expression.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import math
import operator
from typing import Any, Callable, Iterable, Mapping

import simpleeval

from flowengine.functions import FUNCTIONS, MAX_LIST, MAX_TEXT, describe, text_of

#: Longest expression source accepted, and deepest tree.
MAX_SOURCE = 10_000
MAX_DEPTH = 60
#: Largest exponent and largest absolute number a computation may produce.
MAX_POWER = 1_000
MAX_NUMBER = 10**100

CONSTANTS = {"true": True, "false": False, "null": None}


class ExpressionError(Exception):
    """An expression that cannot be parsed or evaluated; ``message`` says why."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        return f"{self.message} in expression '{self.source}'" if self.source else self.message


# --- translation: Altogic text → Python text --------------------------------------------

_OPERATORS = {"&&": " and ", "||": " or "}


def _translate(source: str) -> str:
    """Rewrite Altogic operators outside string literals; strings pass through untouched."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        char = source[i]
        if char in "'\"":
            end = _string_end(source, i)
            out.append(source[i:end])
            i = end
        elif source.startswith(("&&", "||"), i):
            out.append(_OPERATORS[source[i : i + 2]])
            i += 2
        elif char == "!" and not source.startswith("!=", i):
            out.append(" ~")  # a unary operator of high precedence; becomes `not` below
            i += 1
        elif char in "~;\\":
            raise ExpressionError(f"unexpected character '{char}' at position {i + 1}", source)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _string_end(source: str, start: int) -> int:
    quote, i = source[start], start + 1
    while i < len(source):
        if source[i] == "\\":
            i += 2
        elif source[i] == quote:
            return i + 1
        else:
            i += 1
    raise ExpressionError(f"text starting at position {start + 1} is never closed", source)


# --- checking and normalising the tree --------------------------------------------------

_ALLOWED = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Subscript,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.List, ast.Dict,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Not,
    ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip

_DESCRIBE = {
    ast.Lambda: "lambda functions", ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions", ast.DictComp: "comprehensions",
    ast.SetComp: "comprehensions", ast.NamedExpr: "assignment", ast.IfExp: "'x if y else z' (use IF)",
    ast.Slice: "slices", ast.Starred: "'*' unpacking", ast.JoinedStr: "f-strings",
    ast.Tuple: "tuples", ast.Set: "sets", ast.Await: "await", ast.Yield: "yield",
    ast.FloorDiv: "'//'", ast.BitAnd: "'&'", ast.BitOr: "'|'", ast.BitXor: "'^'",
    ast.LShift: "'<<'", ast.RShift: "'>>'", ast.MatMult: "'@'",
    ast.Is: "'is'", ast.IsNot: "'is not'", ast.In: "'in' (use IN or INCLUDES)",
    ast.NotIn: "'not in'",
}  # fmt: skip

_RELATIONAL = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)


class _Normalise(ast.NodeTransformer):
    """Give the Python tree Altogic's meaning and reject everything outside the language."""

    def __init__(self, source: str, functions: Mapping[str, Any]) -> None:
        self.source = source
        self.functions = functions
        self.depth = 0

    def visit(self, node: ast.AST) -> ast.AST:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested deeper than {MAX_DEPTH} levels", self.source)
        if not isinstance(node, _ALLOWED):
            what = _DESCRIBE.get(type(node), type(node).__name__)
            raise ExpressionError(f"{what} not supported", self.source)
        try:
            return super().visit(node)
        finally:
            self.depth -= 1

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if isinstance(node.op, ast.Invert):  # our translation of `!`
            node.op = ast.Not()
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            try:
                _bounded(node.value)  # `1e400` (infinity), 200-digit literals
            except ExpressionError as exc:
                raise ExpressionError(exc.message, self.source) from None
        elif node.value is not None and not isinstance(node.value, (str, bool)):
            raise ExpressionError(f"the literal {node.value!r} is not supported", self.source)
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in CONSTANTS:
            return ast.copy_location(ast.Constant(CONSTANTS[node.id]), node)
        if node.id.startswith("__"):
            raise ExpressionError(f"the name '{node.id}' is not allowed", self.source)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr.startswith("__"):
            raise ExpressionError(f"the field name '{node.attr}' is not allowed", self.source)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if not isinstance(node.func, ast.Name):
            raise ExpressionError("only library functions can be called, like LOWER(x)", self.source)
        if node.keywords:
            raise ExpressionError(f"{node.func.id}: named arguments are not supported", self.source)
        if node.func.id not in self.functions:
            raise ExpressionError(_unknown_function(node.func.id, self.functions), self.source)
        _check_arity(node.func.id, self.functions[node.func.id], len(node.args), self.source)
        node.args = [self.visit(arg) for arg in node.args]
        return node

    def visit_Dict(self, node: ast.Dict) -> ast.AST:
        for key in node.keys:
            if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                raise ExpressionError("object keys must be quoted text", self.source)
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        return _unchain(node) if len(node.ops) > 1 else node


def _unchain(node: ast.Compare) -> ast.AST:
    """Turn Python's chained ``a < b == c`` into Altogic's ``(a < b) == c``."""
    operands = [node.left, *node.comparators]
    ops = list(node.ops)
    for level in (_RELATIONAL, (ast.Eq, ast.NotEq)):
        i = 0
        while i < len(ops):
            if isinstance(ops[i], level):
                pair = ast.Compare(left=operands[i], ops=[ops[i]], comparators=[operands[i + 1]])
                operands[i : i + 2] = [ast.copy_location(pair, node)]
                del ops[i]
            else:
                i += 1
    return operands[0]


def _check_arity(name: str, function: Callable[..., Any], count: int, source: str) -> None:
    """A wrong number of arguments is a load-time error, worded for the builder."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*range(count))
    except TypeError:
        params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        least = sum(1 for p in params if p.default is p.empty and p.kind is not p.VAR_POSITIONAL)
        if any(p.kind is p.VAR_POSITIONAL for p in params):
            wanted = f"at least {least}"
        elif least == len(params):
            wanted = str(least)
        else:
            wanted = f"{least} to {len(params)}"
        plural = "" if wanted == "1" else "s"
        raise ExpressionError(f"{name} takes {wanted} argument{plural}, got {count}", source) from None


def _unknown_function(name: str, functions: Iterable[str]) -> str:
    close = difflib.get_close_matches(name.upper(), list(functions), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown function '{name}'{hint}"


def parse(source: str, functions: Mapping[str, Any] = FUNCTIONS) -> ast.expr:
    """Parse Altogic expression text into a checked Python expression tree."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("the expression is empty", str(source))
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"longer than {MAX_SOURCE} characters", source[:40] + "...")
    try:
        tree = ast.parse(_translate(source).strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"syntax error: {_syntax_message(exc)}", source) from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError("too complex to parse", source[:80]) from None
    try:
        return _Normalise(source, functions).visit(tree).body
    except RecursionError:
        raise ExpressionError(f"nested deeper than {MAX_DEPTH} levels", source[:80]) from None


def _syntax_message(exc: SyntaxError) -> str:
    message = (exc.msg or "invalid syntax").replace("'~'", "'!'")
    if exc.offset:
        return f"{message} (at position {exc.offset})"
    return message


# --- evaluation -------------------------------------------------------------------------


def _bounded(value: Any) -> Any:
    if isinstance(value, (str, list)) and len(value) > (MAX_TEXT if isinstance(value, str) else MAX_LIST):
        raise ExpressionError("the result is too large")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and not abs(value) <= MAX_NUMBER:  # `not <=` catches NaN too
        raise ExpressionError("the number is too large")
    return value


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) or isinstance(b, str):
        return _bounded(text_of(a) + text_of(b))
    if isinstance(a, list) and isinstance(b, list):
        return _bounded(a + b)
    return _bounded(_number(a, "+") + _number(b, "+"))


def _arithmetic(symbol: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        try:
            return _bounded(fn(_number(a, symbol), _number(b, symbol)))
        except ZeroDivisionError:
            raise ExpressionError("division by zero") from None

    return apply


def _multiply(a: Any, b: Any) -> Any:
    if isinstance(a, (str, list)) or isinstance(b, (str, list)):
        raise ExpressionError("'*' works on numbers only")
    return _bounded(_number(a, "*") * _number(b, "*"))


def _power(a: Any, b: Any) -> Any:
    a, b = _number(a, "**"), _number(b, "**")
    if abs(b) > MAX_POWER:
        raise ExpressionError(f"an exponent above {MAX_POWER} is not allowed")
    if a and b * math.log10(abs(a)) > math.log10(MAX_NUMBER):  # known before computing
        raise ExpressionError("the number is too large")
    try:
        result = a**b
    except ZeroDivisionError:
        raise ExpressionError("division by zero") from None
    if isinstance(result, complex):  # (-8) ** 0.5
        raise ExpressionError("a negative number to a fractional power has no real result")
    return _bounded(result)


def _number(value: Any, symbol: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExpressionError(f"'{symbol}' expects numbers, got {_kind(value)}")
    return value


def _equal(a: Any, b: Any) -> bool:
    """JSON equality, as IN compares: true is not 1, and [1] is not [true]."""
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[key], b[key]) for key in a)
    return bool(a == b)


def _compare(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        if isinstance(a, bool) != isinstance(b, bool):
            return False  # true vs 1: different types, as text vs number
        try:
            return fn(a, b)
        except TypeError:
            return False  # text vs number, null vs number: not ordered, so not true

    return apply


def _negate(value: Any) -> Any:
    return -_number(value, "-")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "text",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


OPERATORS = {
    ast.Add: _add,
    ast.Sub: _arithmetic("-", operator.sub),
    ast.Mult: _multiply,
    ast.Div: _arithmetic("/", operator.truediv),
    ast.Mod: _arithmetic("%", operator.mod),
    ast.Pow: _power,
    ast.USub: _negate,
    ast.UAdd: lambda value: _number(value, "+"),
    ast.Not: operator.not_,
    ast.Eq: _equal,
    ast.NotEq: lambda a, b: not _equal(a, b),
    ast.Lt: _compare(operator.lt),
    ast.LtE: _compare(operator.le),
    ast.Gt: _compare(operator.gt),
    ast.GtE: _compare(operator.ge),
}


class _Evaluator(simpleeval.SimpleEval):
    """simpleeval's tree walker with handlers that only ever touch JSON-like data."""

    def __init__(self, functions: Mapping[str, Any]) -> None:
        super().__init__(operators=OPERATORS, functions=dict(functions), names={})
        self.nodes.update(
            {
                ast.Name: self._eval_name,
                ast.Attribute: self._eval_attribute,
                ast.Subscript: self._eval_subscript,
                ast.Call: self._eval_call,
                ast.List: self._eval_list,
                ast.Dict: self._eval_dict,
                ast.Constant: self._eval_constant,
                ast.BoolOp: self._eval_boolop,
            }
        )

    def _eval(self, node: ast.AST) -> Any:
        # The parse-time whitelist already guarantees a handler and that nothing but data
        # and library functions is reachable, so simpleeval's per-node result scan is skipped.
        return self.nodes[type(node)](node)

    @staticmethod
    def _eval_constant(node: ast.Constant) -> Any:
        return node.value

    def _eval_boolop(self, node: ast.BoolOp) -> bool:
        # Altogic's && and || answer true or false (not one of their operands, as in JS).
        if isinstance(node.op, ast.And):
            return all(self._eval(value) for value in node.values)
        return any(self._eval(value) for value in node.values)

    def _eval_name(self, node: ast.Name) -> Any:
        return self.names.get(node.id)

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        return _field(self._eval(node.value), node.attr)

    def _eval_subscript(self, node: ast.Subscript) -> Any:
        container, key = self._eval(node.value), self._eval(node.slice)
        if isinstance(container, dict):
            return container.get(key) if isinstance(key, str) else None
        if isinstance(container, (list, str)):
            if isinstance(key, float) and key.is_integer():
                key = int(key)  # `/` gives floats: items[SIZE(items) / 2]
            if isinstance(key, bool) or not isinstance(key, int):
                raise ExpressionError(f"an index must be a whole number, got {describe(key)}")
            return container[key] if -len(container) <= key < len(container) else None
        if container is None:
            return None
        raise ExpressionError(f"cannot index {_kind(container)}")

    def _eval_call(self, node: ast.Call) -> Any:
        function = self.functions[node.func.id]  # type: ignore[attr-defined]
        try:
            return _bounded(function(*[self._eval(arg) for arg in node.args]))
        except (TypeError, ValueError, OverflowError) as exc:
            name, message = node.func.id, str(exc)  # type: ignore[attr-defined]
            raise ExpressionError(message if message.startswith(name) else f"{name}: {message}") from None

    def _eval_list(self, node: ast.List) -> list[Any]:
        return _bounded([self._eval(item) for item in node.elts])

    def _eval_dict(self, node: ast.Dict) -> dict[str, Any]:
        return {key.value: self._eval(value) for key, value in zip(node.keys, node.values)}  # type: ignore[union-attr]


def _field(value: Any, name: str) -> Any:
    if isinstance(value, dict):
        return value.get(name)
    if value is None:
        return None  # null-safe: `user.phone` is null when there is no user
    raise ExpressionError(f"cannot read field '{name}' of {_kind(value)}")


def _root_names(tree: ast.AST) -> frozenset[str]:
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return frozenset(
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called
    )


def _paths(tree: ast.AST) -> frozenset[tuple[str, ...]]:
    """Every dotted path read, like ('params', 'query', 'phoneNumber')."""
    found = set()
    for node in ast.walk(tree):
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name):
            found.add((node.id, *reversed(parts)))
    return frozenset(found)


class Expression:
    """A parsed expression, ready to evaluate against a run's names."""

    __slots__ = ("source", "tree", "names", "blocking", "_idle", "_functions", "_path", "_fields")

    def __init__(self, tree: ast.expr, source: str, functions: Mapping[str, Any] = FUNCTIONS) -> None:
        self.source = source
        self.tree = tree
        self.names = _root_names(tree)
        called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}  # type: ignore[attr-defined]
        self.blocking = any(getattr(functions[name], "blocking", False) for name in called)
        self._functions = functions
        self._idle: list[_Evaluator] = []  # evaluators not in use; list.pop/append are atomic
        # Most expressions only read a value (`params.body.email`, `findUser._id`): those
        # skip the tree walk and follow the path directly.
        self._path = _plain_path(tree)
        self._fields = self._path[1:] if self._path else ()

    @classmethod
    def from_tree(cls, tree: ast.expr, source: str) -> Expression:
        return cls(tree, source)

    @property
    def paths(self) -> frozenset[tuple[str, ...]]:
        return _paths(self.tree)

    def evaluate(self, scope: Mapping[str, Any]) -> Any:
        """The expression's value for one run's names."""
        if self._path is not None:
            return self._read(scope)
        # A node with a blocking call evaluates all its params in worker threads, so one
        # Expression may run in several threads at once: each run takes its own evaluator.
        try:
            evaluator = self._idle.pop()
        except IndexError:
            evaluator = _Evaluator(self._functions)
        evaluator.names = scope
        try:
            return evaluator._eval(self.tree)
        except ExpressionError as exc:
            raise ExpressionError(exc.message, self.source) from None
        except RecursionError:
            raise ExpressionError("too deeply nested to evaluate", self.source) from None
        finally:
            evaluator.names = {}  # the cached expression keeps no run's data alive
            self._idle.append(evaluator)

    def _read(self, scope: Mapping[str, Any]) -> Any:
        value = scope.get(self._path[0])  # type: ignore[index]
        for name in self._fields:
            if value.__class__ is dict:  # the usual case, checked without a call
                value = value.get(name)
            else:
                value = self._field(value, name)
        return value

    def _field(self, value: Any, name: str) -> Any:
        try:
            return _field(value, name)
        except ExpressionError as exc:
            raise ExpressionError(exc.message, self.source) from None

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


def _plain_path(tree: ast.expr) -> tuple[str, ...] | None:
    """``('params', 'body', 'email')`` for a tree that only reads ``params.body.email``."""
    fields: list[str] = []
    while isinstance(tree, ast.Attribute):
        fields.append(tree.attr)
        tree = tree.value
    return (tree.id, *reversed(fields)) if isinstance(tree, ast.Name) else None


def compile_expression(source: str, functions: Mapping[str, Any] = FUNCTIONS) -> Expression:
    """Parse and check an expression once; evaluate it per run with ``.evaluate``."""
    return Expression(parse(source, functions), source, functions)


# --- templates --------------------------------------------------------------------------


class Template:
    """Text with ``{{ expr }}`` holes."""

    __slots__ = ("source", "parts", "names", "blocking")

    def __init__(self, source: str, parts: list[str | Expression]) -> None:
        self.source = source
        self.parts = parts
        holes = [p for p in parts if isinstance(p, Expression)]
        self.names = frozenset().union(*(h.names for h in holes))
        self.blocking = any(h.blocking for h in holes)

    @property
    def expressions(self) -> list[Expression]:
        return [p for p in self.parts if isinstance(p, Expression)]

    def render(self, scope: Mapping[str, Any], escape: Callable[[str], str] | None = None) -> str:
        """The text with each hole's value; ``escape`` (e.g. ``html.escape``) is applied to holes."""
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        text = "".join(
            p if isinstance(p, str) else (escape or str)(text_of(p.evaluate(scope))) for p in self.parts
        )
        if len(text) > MAX_TEXT:
            raise ExpressionError("the rendered text is too large", self.source[:80])
        return text

    def evaluate(self, scope: Mapping[str, Any]) -> str:
        return self.render(scope)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


def compile_template(source: str, functions: Mapping[str, Any] = FUNCTIONS) -> Template:
    """Split text on ``{{ }}`` holes and compile each hole as an expression."""
    if not isinstance(source, str):
        raise ExpressionError(f"a template must be text, got {_kind(source)}", str(source))
    parts: list[str | Expression] = []
    rest = source
    while "{{" in rest:
        before, _, after = rest.partition("{{")
        hole, closed, rest = after.partition("}}")
        if not closed:
            raise ExpressionError("'{{' is never closed with '}}'", source)
        if before:
            parts.append(before)
        parts.append(compile_expression(hole.strip(), functions))
    if rest or not parts:
        parts.append(rest)
    return Template(source, parts)
