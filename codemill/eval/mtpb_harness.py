"""Runs one MTPB program and scores what it printed (SPEC §10), inside the eval sandbox:

    python3 -I mtpb_harness.py program.py expected.json

This file is copied into the sample's work directory and run by the sandbox's interpreter, so it imports
only the standard library (numpy and pandas are looked up only when the program imported them). Exit 0 when
the first argument of the program's last `print` call equals the expected value; otherwise the traceback's
last line classes the outcome as for HumanEval-X Python: an AssertionError from here is a wrong answer, the
program's own exception (SyntaxError from parsing included) is its error.

Scoring, as CodeGen's mtpb_exec.py: a last statement that is an expression and not a print call is printed;
pandas Series and numpy arrays count as lists, numpy scalars as Python numbers, lists of tuples as lists of
lists; then the value is cast to the expected type (booleans compared as strings); floats match within 1e-6.
Beyond the reference, which rejects them: an expected dict matches a dict (or Series) whose keys, written
as JSON writes keys, and values match; an expected None (JSON null) matches None or the string 'None'.
"""

from __future__ import annotations

import ast
import builtins
import json
import sys

FLOAT_TOLERANCE = 1e-6
SHOWN_CHARS = 300  # of the expected and printed values in a wrong answer's message


def print_last_expression(tree: ast.Module) -> ast.Module:
    """`f(2)` as the last statement becomes `print(f(2))`, as the reference does (a notebook's last line)."""
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not _is_print_call(last.value):
        last.value = ast.Call(func=ast.Name(id="print", ctx=ast.Load()), args=[last.value], keywords=[])
        ast.fix_missing_locations(tree)
    return tree


def _is_print_call(node: ast.expr) -> bool:
    # The reference's test: a call of a name starting with "print".
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("print")


def _series(value):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.Series)


def plain(value):
    """Series and arrays as lists, numpy scalars as Python values, a list's tuples as lists."""
    np = sys.modules.get("numpy")
    if _series(value):
        return value.tolist()
    if np is not None and isinstance(value, np.ndarray):
        return value.tolist()
    if np is not None and isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def json_key(key) -> str | None:
    """The string JSON writes for a dict key (1 -> "1", True -> "true", None -> "null"); None when JSON has no
    string for it (a tuple, a type)."""
    key = plain(key)
    if isinstance(key, str):
        return key
    try:
        return next(iter(json.loads(json.dumps({key: 0}))))
    except (TypeError, ValueError):
        return None


def equivalent(value, expected) -> bool:
    """Whether a printed value matches an expected output read from JSON."""
    if expected is None:
        return value is None or (isinstance(value, str) and value == "None")
    if isinstance(expected, dict):
        if _series(value):
            value = value.to_dict()
        if not isinstance(value, dict):
            return False
        keyed = {json_key(k): v for k, v in value.items()}
        if None in keyed or len(keyed) != len(value) or keyed.keys() != expected.keys():
            return False
        return all(equivalent(keyed[k], expected[k]) for k in expected)
    value = plain(value)
    if type(value) is not type(expected):
        if isinstance(expected, bool):
            return str(value) == str(expected)
        value = type(expected)(value)
    if isinstance(expected, float):
        return abs(value - expected) < FLOAT_TOLERANCE
    return bool(value == expected)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def score(printed: list[tuple], expected) -> None:
    """Raise AssertionError unless the first argument of the last print call matches."""
    if not printed:
        raise AssertionError("the program printed nothing")
    if not printed[-1]:
        raise AssertionError("the last print call has no argument")
    value = printed[-1][0]
    try:
        same = equivalent(value, expected)
    except Exception as exc:  # a value the expected type cannot be made from is a wrong answer, not a crash
        raise AssertionError(f"expected {_shown(expected)}, printed {_shown(value)} "
                             f"({type(exc).__name__}: {exc})") from None
    if not same:
        raise AssertionError(f"expected {_shown(expected)}, printed {_shown(value)}")


def main(argv: list[str]) -> None:
    program_path, expected_path = argv
    with open(program_path, encoding="utf-8") as f:
        source = f.read()
    with open(expected_path, encoding="utf-8") as f:
        expected = json.load(f)
    tree = print_last_expression(ast.parse(source, program_path))
    printed: list[tuple] = []

    def recording_print(*args, **kwargs):
        printed.append(args)
        return builtins.print(*args, **kwargs)

    scope = {"__name__": "__main__", "__builtins__": builtins, "print": recording_print}
    try:
        exec(compile(tree, program_path, "exec"), scope)
    except SystemExit:
        pass  # the program ended itself; what it printed until then is scored
    sys.stdout.flush()
    score(printed, expected)


if __name__ == "__main__":
    main(sys.argv[1:])
