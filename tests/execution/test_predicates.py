"""Predicates over the metrics columns: SQL-ish text parsed safely, never evaluated."""
import pyarrow as pa
import pytest

from pipeline.execution.predicates import select

TABLE = pa.table({"key": ["a", "b", "c", "d"], "status": ["ok", "error", "ok", "ok"],
                  "error_kind": [None, "size", None, None], "residual_z": [0.9, None, 3.5, 1.2],
                  "nfe": [40, None, 900, 70], "flash": [True, True, False, True]})


@pytest.mark.parametrize("text,keys", [
    ("status = 'error'", ["b"]), ("status == 'ok' and residual_z > 2", ["c"]),
    ("residual_z > 2 or status = 'error'", ["b", "c"]), ("not flash", ["c"]),
    ("error_kind in ('size', 'params')", ["b"]), ("residual_z is null", ["b"]),
    ("residual_z is not null and nfe <= 70", ["a", "d"]), ("2 < residual_z", ["c"]),
    ("key not in ('a', 'b')", ["c", "d"]), ("status = 'a = b'", []),
])
def test_predicates_select_the_right_rows(text, keys):
    assert select(TABLE, text).column("key").to_pylist() == keys


@pytest.mark.parametrize("text,needle", [
    ("__import__('os').system('true')", "not a supported predicate"), ("nope > 1", "unknown column"),
    ("status = error", "expected a literal"), ("residual_z > (1).real", "expected a literal"),
    ("status =", "does not parse"), ("", "needs a predicate"), ("x" * 3000, "longer than"),
    ("residual_z + 1 > 2", "expected a column"), ("key in 'abc'", "parenthesised list"),
    ("status = 'ok'; DROP TABLE metrics", "does not parse"), ("status = 'ok' -- comment", "expected a literal"),
])
def test_hostile_or_broken_predicates_are_refused(text, needle):
    with pytest.raises(ValueError, match=needle):
        select(TABLE, text)
