"""MTPB's two scoring rules on decoded printed values: codemill's strict rule and CodeGen's check_equivalence
with its quirks (mtpb_exec.py), the runner's CodeGen print rewrite, and what each rule does with a program
that raised or timed out after printing."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from codemill.eval import mtpb
from codemill.eval.harness import codec
from codemill.eval.harness.mtpb_runner import codegen_rewrite_with_print, print_last_expression
from codemill.eval.mtpb_scoring import cannot_pass_in_codegen, codegen_equivalent, score, strict_equivalent


def through(value):
    """As the runner sends it and the scorer reads it."""
    return codec.loads(codec.dumps(value))


@pytest.mark.parametrize("printed,expected,same", [
    (3, 3, True),
    (3.0000001, 3.0, True),                      # floats within 1e-6
    (3.7, 3, True),                              # int(3.7) == 3: cast to the expected type
    ("7", 7, True),
    ([1, 2], [1, 2], True),
    ([1.0, 2.0000001], [1.0, 2.0], False),       # lists compare exactly (no tolerance inside)
    ([(1, 2), (3, 4)], [[1, 2], [3, 4]], True),  # a list of tuples as a list of lists
    ((1, 2), [1, 2], True),                      # list((1, 2))
    ("True", True, True),                        # booleans compared as strings
    (1, True, False),                            # str(1) != "True"
    (np.int64(5), 5, True),
    (np.int8(5), 5, True),                       # not in the reference's list: cast with int()
    (np.float32(0.5), 0.5, True),
    (np.bool_(False), False, True),
    (np.array([1, 2]), [1, 2], True),
    (pd.Series([1.0, 2.0000001]), [1.0, 2.0], True),  # a Series against np.allclose
    (pd.Series([1.0, 2.1]), [1.0, 2.0], False),
    ({"a": 1}, {"a": 1}, False),                 # dicts are an unsupported type there
    (None, None, False),                         # so is None
    ("None", None, False),
    ([1, 2], "[1, 2]", True),                    # str([1, 2])
])
def test_codegen_check_equivalence(printed, expected, same):
    try:
        got = codegen_equivalent(through(printed), expected)
    except Exception:
        got = False  # the reference's harness counts an exception as a failure
    assert got is same


@pytest.mark.parametrize("printed,expected", [({"a": 1}, {"a": 1}), (None, None), ("None", None)])
def test_strict_accepts_what_codegen_cannot(printed, expected):
    assert strict_equivalent(through(printed), expected)
    assert cannot_pass_in_codegen(expected)


def test_shipped_test_cases_codegen_cannot_pass_are_the_dict_and_none_ones():
    problems = mtpb.load_problems()
    cannot = {(tid, t) for tid, p in problems.items() for t in range(p.n_tests) if cannot_pass_in_codegen(p.expected(t))}
    assert ("MTPB/41", 0) in cannot or any(tid == "MTPB/41" for tid, _ in cannot)
    assert any(tid == "MTPB/89" for tid, _ in cannot)
    assert all(p.expected(t) is None or isinstance(p.expected(t), dict) for tid, t in cannot
               for p in [problems[tid]])


def test_a_raise_after_printing_counts_only_under_codegen():
    record = {"status": "raised", "error": "ZeroDivisionError: division by zero", "printed": 1, "value": 7}
    assert score(record, 7, "codegen") == (True, "")
    assert score(record, 7, "strict")[0] is False
    timed_out = {**record, "error": "TimeoutException: Timed out!"}
    assert score(timed_out, 7, "codegen") == (True, "")
    exited = {"status": "exited", "error": "SystemExit: 0", "printed": 1, "value": 7}
    assert score(exited, 7, "codegen")[0] is False
    assert score(exited, 7, "strict") == (True, "")  # codemill: the program ended itself after printing
    assert score({"too_large": True, "error": "big", "printed": 1}, 7, "strict") == (False, "big")


@pytest.mark.parametrize("source,rewritten", [
    ("x = 2\nx * 3", "x = 2\nprint(x * 3)"),
    ("def f():\n    return 1\nf()", "def f():\n    return 1\nprint(f())"),
    ("x = f()", "x = print(f())"),                 # the reference wraps an assignment's value too
    ("print(1)", "print(1)"),
    ("x = print(1)", "x = print(1)"),              # a value that is a print call counts as ending with print
    ("for i in range(2):\n    pass", "for i in range(2):\n    pass"),  # no .value: left as it was
    ("", ""),
])
def test_codegen_print_rewrite(source, rewritten):
    assert codegen_rewrite_with_print(source) == rewritten


def test_strict_print_rewrite_touches_only_an_expression():
    assert ast.unparse(print_last_expression(ast.parse("x = f()"))) == "x = f()"
    assert ast.unparse(print_last_expression(ast.parse("x = 2\nx"))) == "x = 2\nprint(x)"
