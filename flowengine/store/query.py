"""Altogic queries compiled into SQL WHERE clauses, once, when the app loads.

``this.email == params.body.email && this.age >= 18`` is parsed by the expression language,
then walked: parts that read ``this`` become SQL on the model's columns; every other part
(``params.body.email``, ``18``) becomes a bound parameter whose value an ``Expression``
computes per run. No value is ever written into SQL text, and nothing is filtered in
Python: a construct that has no SQL form is refused at load time with a ``QueryError``.

Supported: ``== != < <= > >=``, ``&&``, ``||``, ``!``, ``AND``/``OR``/``NOT``, ``IN(this.x,
list)``, ``IN(value, this.list)``, ``INCLUDES(this.text, 'part')`` (substring) and
``INCLUDES(this.list, value)`` (membership), ``STARTSWITH``, ``ENDSWITH``, ``EXISTS(this.x)``,
and ``LOWER``/``TOLOWER``/``UPPER``/``TOUPPER`` around a field. Text matching is
case-sensitive on both databases.

A run value that is null never matches (``this.email == params.body.email`` finds nothing
when the email is missing, rather than an object without email); write ``this.x == null``
to look for a missing value. Run values are converted to the compared field's type
(``'18'`` for an integer field is 18; an email is lower-cased like stored emails), and a
value that cannot be converted is a 400 naming the field.
"""

from __future__ import annotations

import ast
import difflib
import json
import operator
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from flowengine.errors import FlowError
from flowengine.expressions import Expression, ExpressionError, parse
from flowengine.functions import text_of
from flowengine.models import HIDDEN, NORMALISE, Field, Model, parse_date, parse_datetime
from flowengine.store.tables import KINDS, COLUMN_TYPES

SYSTEM = {"_id": Field("_id", "text"), "createdAt": Field("createdAt", "datetime"),
          "updatedAt": Field("updatedAt", "datetime")}  # fmt: skip

Build = Callable[[sa.Table, str], Any]  # (table, dialect name) → SQLAlchemy element

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
            ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}  # fmt: skip
_CASE = {"LOWER": sa.func.lower, "TOLOWER": sa.func.lower, "UPPER": sa.func.upper, "TOUPPER": sa.func.upper}


class QueryError(ValueError):
    """A query that cannot become SQL; raised at load time."""

    def __init__(self, message: str, source: str = "") -> None:
        super().__init__(f"{message} in query '{source}'" if source else message)
        self.message = message


class Filter(NamedTuple):
    """A compiled query with one run's values: what the store's reads take as ``where``.
    (A named tuple: one is made per run, and a tuple is the cheapest object to make.)"""

    query: CompiledQuery
    values: dict[str, Any]


class _Param:
    """One bound parameter: its name in the SQL, and how a run computes its value."""

    __slots__ = ("name", "value", "convert", "_evaluate")

    def __init__(self, name: str, value: Expression | Any, convert: Callable[[Any], Any]) -> None:
        self.name = name
        self.value = value
        self.convert = convert
        self._evaluate = value.evaluate if isinstance(value, Expression) else None

    def bind(self, scope: Mapping[str, Any]) -> Any:
        return self.convert(self.value if self._evaluate is None else self._evaluate(scope))


class CompiledQuery:
    """A query ready to run: ``evaluate(scope)`` gives the ``Filter`` for one run."""

    blocking = False

    def __init__(self, source: str, model: Model, build: Build, params: list[_Param]) -> None:
        self.source = source
        self.model = model.name
        self._build = build
        self.params = tuple(params)
        self.expressions = [p.value for p in params if isinstance(p.value, Expression)]
        #: Root names the query reads besides ``this`` (for the flow checker).
        self.names = frozenset().union(*(e.names for e in self.expressions))

    def clause(self, table: sa.Table, dialect: str) -> Any:
        """The WHERE clause on ``table`` for a dialect ('sqlite' or 'postgresql')."""
        return self._build(table, dialect)

    def evaluate(self, scope: Mapping[str, Any]) -> Filter:
        values = {}
        for param in self.params:  # a loop, not a comprehension: no frame per run
            values[param.name] = param.bind(scope)
        return Filter(self, values)

    def __repr__(self) -> str:
        return f"CompiledQuery({self.source!r})"


def compile_query(source: str, model: Model) -> CompiledQuery:
    """Compile an Altogic query on ``model``; raises ``QueryError`` saying what is not supported."""
    if model.transient:
        raise QueryError(f"model '{model.name}' is transient: it has nothing stored to query")
    try:
        tree = parse(source)
    except ExpressionError as exc:
        raise QueryError(exc.message, source) from None
    compiler = _Compiler(source, model)
    build = compiler.condition(tree)
    return CompiledQuery(source, model, build, compiler.params)


def query_param(raw: Any, context: Any) -> CompiledQuery:
    """The flow compiler's hook for params of kind ``query`` (the node names its model)."""
    name = context.node.get("model")
    model = context.models.get(name)
    if model is None:
        close = difflib.get_close_matches(str(name), list(context.models), n=1)
        raise QueryError(f"unknown model '{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    if not isinstance(raw, str):
        raise QueryError("a query is text, like this.email == params.body.email")
    return compile_query(raw, model)


# --- the walk ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """An operand that reads the queried object: a field, maybe inside LOWER()/UPPER()."""

    field: Field
    build: Build


def _reads_this(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "this" for n in ast.walk(node))


class _Compiler:
    def __init__(self, source: str, model: Model) -> None:
        self.source = source
        self.model = model
        self.params: list[_Param] = []

    def fail(self, message: str) -> QueryError:
        return QueryError(message, self.source)

    # conditions: anything that is true or false for one object

    def condition(self, node: ast.expr) -> Build:
        if not _reads_this(node):
            param = self.param(node, bool)
            return lambda t, d: sa.cast(param(t, d), sa.Boolean)
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(value) for value in node.values]
            join = sa.and_ if isinstance(node.op, ast.And) else sa.or_
            return lambda t, d: join(*(part(t, d) for part in parts))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _negation(self.condition(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        operand = self.operand(node)
        if isinstance(operand, _Column) and operand.field.type == "boolean":
            return lambda t, d: operand.build(t, d) == sa.true()
        raise self.fail(f"'{ast.unparse(node)}' is not a condition; compare it, like {ast.unparse(node)} == true")

    def compare(self, node: ast.Compare) -> Build:
        op = _COMPARE[type(node.ops[0])]
        left, right = self.operand(node.left), self.operand(node.comparators[0])
        column = left if isinstance(left, _Column) else right
        other = right if column is left else left
        self.comparable(column.field)
        if isinstance(other, _Column):
            return lambda t, d: op(left.build(t, d), right.build(t, d))  # type: ignore[union-attr]
        if isinstance(other, ast.Constant) and other.value is None:
            if op not in (operator.eq, operator.ne):
                raise self.fail("null can only be compared with == or !=")
            test = sa.ColumnOperators.is_ if op is operator.eq else sa.ColumnOperators.is_not
            return lambda t, d: test(column.build(t, d), None)
        param = self.param(other, _converter(column.field))
        if op is operator.ne:  # as in expressions, null differs from every value
            return lambda t, d: column.build(t, d).is_distinct_from(param(t, d))
        if column is left:
            return lambda t, d: op(column.build(t, d), param(t, d))
        return lambda t, d: op(param(t, d), column.build(t, d))

    def call(self, node: ast.Call) -> Build:
        name, args = node.func.id, node.args  # type: ignore[attr-defined]
        if name in ("AND", "OR") and args:
            parts = [self.condition(arg) for arg in args]
            join = sa.and_ if name == "AND" else sa.or_
            return lambda t, d: join(*(part(t, d) for part in parts))
        if name == "NOT" and len(args) == 1:
            return _negation(self.condition(args[0]))
        if name == "EXISTS" and len(args) == 1:
            column = self.column(args[0], name)
            return lambda t, d: column.build(t, d).is_not(None)
        if name in ("INCLUDES", "IN") and len(args) == 2:
            return self.membership(name, *args)
        if name in ("STARTSWITH", "ENDSWITH") and len(args) == 2:
            return self.affix(name, *args)
        raise self.fail(f"{name}() with these arguments has no SQL form; queries support "
                        "IN, INCLUDES, STARTSWITH, ENDSWITH, EXISTS, NOT, AND, OR and comparisons")  # fmt: skip

    def membership(self, name: str, first: ast.expr, second: ast.expr) -> Build:
        container, item = (first, second) if name == "INCLUDES" else (second, first)
        if _reads_this(container):
            column = self.column(container, name)
            if column.field.type == "list":
                return self.list_contains(column, item)
            if KINDS[column.field.type] != "text" or name == "IN":
                raise self.fail(f"{name}: field '{column.field.name}' is not a list")
            needle = self.text_param(item)
            return lambda t, d: _position(d)(column.build(t, d), needle(t, d)) > 0
        column = self.column(item, name)
        self.comparable(column.field)
        convert = _converter(column.field)
        values = self.param(container, lambda v: _json_list(column.field, v, convert))
        return lambda t, d: column.build(t, d).in_(_json_items(values(t, d), t.c[column.field.name].type, d))

    def list_contains(self, column: _Column, item: ast.expr) -> Build:
        items = column.field.items
        assert items is not None
        if items.type == "object":
            raise self.fail(f"'{column.field.name}' holds objects; look for a plain value in a list of values")
        value = self.param(item, _converter(items))
        item_type = COLUMN_TYPES[KINDS[items.type]]()

        def build(t: sa.Table, d: str) -> Any:
            if d == "postgresql":
                wanted = sa.func.jsonb_build_array(sa.cast(value(t, d), item_type))
                return column.build(t, d).op("@>", is_comparison=True)(wanted)
            each = sa.func.json_each(column.build(t, d)).table_valued("value")
            return sa.exists().select_from(each).where(each.c.value == value(t, d))

        return build

    def affix(self, name: str, first: ast.expr, second: ast.expr) -> Build:
        column = self.column(first, name)
        if KINDS[column.field.type] != "text":
            raise self.fail(f"{name}: field '{column.field.name}' is not text")
        part = self.text_param(second)
        test = _starts if name == "STARTSWITH" else _ends
        return lambda t, d: test(column.build(t, d), part(t, d), d)

    # operands: what sits on either side of a comparison

    def operand(self, node: ast.expr) -> _Column | ast.expr:
        if not _reads_this(node):
            return node
        if isinstance(node, ast.Call) and node.func.id in _CASE and len(node.args) == 1:  # type: ignore[attr-defined]
            inner = self.column(node.args[0], node.func.id)  # type: ignore[attr-defined]
            if KINDS[inner.field.type] != "text":
                raise self.fail(f"{node.func.id}: field '{inner.field.name}' is not text")  # type: ignore[attr-defined]
            case = _CASE[node.func.id]  # type: ignore[attr-defined]
            return _Column(Field(inner.field.name, "text"), lambda t, d: case(inner.build(t, d)))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "this":
            field = self.field(node.attr)
            return _Column(field, lambda t, d: t.c[field.name])
        if isinstance(node, ast.Attribute) and _reads_this(node.value):
            raise self.fail(f"reading inside a field ('{ast.unparse(node)}') is not supported in queries")
        raise self.fail(f"'{ast.unparse(node)}' has no SQL form; use a field of this, like this.email")

    def column(self, node: ast.expr, function: str) -> _Column:
        operand = self.operand(node)
        if not isinstance(operand, _Column):
            raise self.fail(f"{function}: '{ast.unparse(node)}' must be a field of this, like this.name")
        return operand

    def field(self, name: str) -> Field:
        field = SYSTEM.get(name) or self.model.fields.get(name)
        if field is None:
            known = [*SYSTEM, *self.model.fields]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise self.fail(f"'{name}' is not a field of {self.model.name}{hint}")
        if field.type in HIDDEN:
            raise self.fail(f"'{name}' is {field.type} and cannot be queried")
        return field

    def comparable(self, field: Field) -> None:
        if KINDS[field.type] == "json":
            raise self.fail(f"'{field.name}' is a {field.type}; compare its items with INCLUDES or IN instead")

    # parameters: the values a run supplies

    def param(self, node: ast.expr, convert: Callable[[Any], Any]) -> Build:
        name = f"q{len(self.params)}"
        value = node.value if isinstance(node, ast.Constant) else Expression.from_tree(node, self.source)
        self.params.append(_Param(name, value, convert))
        return lambda t, d: sa.bindparam(name)

    def text_param(self, node: ast.expr) -> Build:
        param = self.param(node, lambda v: None if v is None else text_of(v))
        return lambda t, d: sa.cast(param(t, d), sa.Text)


def _negation(inner: Build) -> Build:
    """``!x``: where SQL would say "unknown" (x reads a null), a query says "not x is true"."""
    return lambda t, d: sa.not_(sa.func.coalesce(inner(t, d), sa.false()))


# --- dialect-specific SQL ---------------------------------------------------------------


def _position(dialect: str) -> Callable[..., Any]:
    return sa.func.strpos if dialect == "postgresql" else sa.func.instr


def _starts(column: Any, part: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.func.starts_with(column, part)
    return sa.func.substr(column, 1, sa.func.length(part)) == part


def _ends(column: Any, part: Any, dialect: str) -> Any:
    if dialect == "postgresql":
        return sa.func.right(column, sa.func.length(part)) == part
    return sa.func.substr(column, sa.func.length(column) - sa.func.length(part) + 1) == part


def _json_items(param: Any, column_type: Any, dialect: str) -> Any:
    """The items of a JSON list parameter as a subquery: one bound value however long the list."""
    if dialect == "postgresql":
        each = sa.func.jsonb_array_elements_text(sa.cast(param, postgresql.JSONB)).table_valued("value")
        return sa.select(sa.cast(each.c.value, column_type))
    each = sa.func.json_each(param).table_valued("value")
    return sa.select(each.c.value)


# --- converting run values to a field's type --------------------------------------------


def _converter(field: Field) -> Callable[[Any], Any]:
    kind = KINDS[field.type]
    convert = _KIND_CONVERT[kind]
    normalise = NORMALISE.get(field.type) if kind == "text" else None

    def apply(value: Any) -> Any:
        if value is None:
            return None
        if kind == "text" and value.__class__ is str:  # the usual case, without a try
            return normalise(value) if normalise else value
        try:
            converted = convert(value)
            return normalise(converted) if normalise else converted
        except (TypeError, ValueError):
            raise FlowError(
                "invalid_query_value",
                f"the query compares field '{field.name}' ({field.type}) with {json.dumps(value, default=str)[:60]}",
                status=400,
                details={"field": field.name},
            ) from None

    return apply


def _to_text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise TypeError("not text")
    return text_of(value)


def _to_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError("not a number")
    return float(value)


def _to_integer(value: Any) -> int:
    """A whole number (an integer column compared with 17.5 would be rounded by PostgreSQL)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _to_number(value)
    if not number.is_integer():
        raise ValueError("not a whole number")
    return int(number)


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise ValueError("not a boolean")


def _moment(parse: Callable[[str], str | None]) -> Callable[[Any], str]:
    """A date or datetime in its stored form, so text comparison orders it correctly."""

    def convert(value: Any) -> str:
        stored = parse(value) if isinstance(value, str) else None
        if stored is None:
            raise ValueError("not a date")
        return stored

    return convert


_KIND_CONVERT: dict[str, Callable[[Any], Any]] = {
    "text": _to_text, "integer": _to_integer, "decimal": _to_number, "boolean": _to_boolean,
    "date": _moment(parse_date), "datetime": _moment(parse_datetime), "json": lambda v: v,
}  # fmt: skip


def _json_list(field: Field, value: Any, convert: Callable[[Any], Any]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise FlowError("invalid_query_value", f"IN needs a list to compare field '{field.name}' with",
                        status=400, details={"field": field.name})  # fmt: skip
    return json.dumps([convert(item) for item in value])


def _install() -> None:
    """Teach the flow compiler to compile params of kind ``query``."""
    from flowengine.graph import PARAM_COMPILERS

    PARAM_COMPILERS.setdefault("query", query_param)


_install()
