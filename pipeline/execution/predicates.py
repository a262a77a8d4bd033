"""Row predicates over the metrics columns, parsed safely into pyarrow expressions.

`status = 'error' or residual_z > 2`, `error_kind in ('size', 'params')`,
`not flash and nfe >= 500`, `psnr is null`. The text is parsed with Python's `ast` (never
evaluated) and only these nodes are accepted: comparisons (= == != < <= > >=, in, not in)
between one column and literals, `and` / `or` / `not`, parentheses, `COLUMN is null` and
`COLUMN is not null`. Column names must exist in the table; anything else is refused with
the offending part named.
"""
from __future__ import annotations

import ast
import re

import pyarrow as pa
import pyarrow.compute as pc

_SINGLE_EQ = re.compile(r"(?<![=!<>])=(?!=)")
_IS_NULL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s+is\s+(not\s+)?null\b", re.I)
_OPS = {ast.Eq: "equal", ast.NotEq: "not_equal", ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater",
        ast.GtE: "greater_equal"}
MAX_CHARS = 2000


def _sql_to_python(text: str) -> str:
    """`=` → `==` and `x is [not] null` → a marker call, outside string literals only."""
    parts = re.split(r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", text)
    for i in range(0, len(parts), 2):
        p = _IS_NULL.sub(lambda m: f"{'not ' if m.group(2) else ''}__is_null__({m.group(1)})", parts[i])
        parts[i] = _SINGLE_EQ.sub("==", p)
    return "".join(parts)


def parse(text: str, schema: pa.Schema) -> pc.Expression:
    if not isinstance(text, str) or not text.strip():
        raise ValueError("--where needs a predicate, e.g. \"status = 'error'\"")
    if len(text) > MAX_CHARS:
        raise ValueError(f"--where is longer than {MAX_CHARS} characters")
    try:
        tree = ast.parse(_sql_to_python(text), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"--where {text!r} does not parse: {exc.msg}") from None
    return _build(tree.body, schema, text)


def _column(node, schema: pa.Schema, text: str) -> pc.Expression:
    if not isinstance(node, ast.Name):
        raise ValueError(f"--where {text!r}: expected a column name, got {ast.unparse(node)!r}")
    if node.id not in schema.names:
        raise ValueError(f"--where {text!r}: unknown column {node.id!r}; columns: {', '.join(schema.names)}")
    return pc.field(node.id)


def _literal(node, text: str):
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool)):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant) \
            and isinstance(node.operand.value, (int, float)):
        return -node.operand.value
    raise ValueError(f"--where {text!r}: expected a literal, got {ast.unparse(node)!r}")


def _build(node, schema: pa.Schema, text: str) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_build(v, schema, text) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_build(node.operand, schema, text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__is_null__" \
            and len(node.args) == 1 and not node.keywords:
        return _column(node.args[0], schema, text).is_null()
    if isinstance(node, ast.Name):  # a bare boolean column: `flash`
        return _column(node, schema, text) == True  # noqa: E712 - an expression, not a Python test
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, op, right = node.left, node.ops[0], node.comparators[0]
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.Tuple, ast.List)):
                raise ValueError(f"--where {text!r}: 'in' takes a parenthesised list of literals")
            found = _column(left, schema, text).isin([_literal(e, text) for e in right.elts])
            return ~found if isinstance(op, ast.NotIn) else found
        if type(op) in _OPS:
            if isinstance(left, ast.Name):
                return getattr(pc, _OPS[type(op)])(_column(left, schema, text), _literal(right, text))
            flipped = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}.get(type(op), type(op))
            return getattr(pc, _OPS[flipped])(_column(right, schema, text), _literal(left, text))
    raise ValueError(f"--where {text!r}: {ast.unparse(node)!r} is not a supported predicate (compare a column "
                     "with a literal; combine with and / or / not)")


def select(table: pa.Table, text: str) -> pa.Table:
    """The rows of `table` for which the predicate holds (null counts as false)."""
    return table.filter(parse(text, table.schema))
