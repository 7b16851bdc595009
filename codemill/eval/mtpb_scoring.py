"""MTPB's scoring, outside the sandbox: the record a program's runner printed (harness/mtpb_runner.py: the first
argument of the last print call, as data) against the test case's expected output, which never entered the
sandbox. Two rules:

- `strict` (codemill's default, SPEC §10): pandas Series and numpy arrays count as lists, numpy scalars as
  Python numbers, lists of tuples as lists of lists; then the value is cast to the expected type (booleans
  compared as strings); floats match within 1e-6. Beyond the reference, which rejects them: an expected dict
  matches a dict (or Series) whose keys, written as JSON writes keys, and values match; an expected None
  (JSON null) matches None or the string 'None'. The program must finish (a raise or a timeout fails).
- `codegen`: CodeGen's check_equivalence exactly (Series against np.allclose, the numpy scalar types it lists,
  `type(expected)(value)` casts, dicts and None never equal), on whatever the program printed last, even when
  it then raised or timed out (as CodeGen's harness scores it).

docs/eval.md lists every difference between the two and from CodeGen's harness.
"""

from __future__ import annotations

import hmac
import json
import re

from codemill.eval import proof
from codemill.eval.harness.codec import CodecError, Opaque, SeriesValues, decode

STRICT, CODEGEN = "strict", "codegen"
SCORINGS = (STRICT, CODEGEN)
RECORD_LINE = re.compile(rb"CODEMILL-MTPB ([0-9a-f]{64}) (\{[^\n]*\})")
FLOAT_TOLERANCE = 1e-6
SHOWN_CHARS = 300


def read_record(key: bytes, captured: list[str]) -> dict | None:
    """The last record among `captured` (RECORD_LINE matches) whose MAC verifies for `key`."""
    found = None
    for line in captured:
        m = RECORD_LINE.fullmatch(line.encode())
        if m and hmac.compare_digest(m.group(1).decode(), proof.mac(key, m.group(2))):
            try:
                record = json.loads(m.group(2))
            except ValueError:
                continue
            if isinstance(record, dict):
                found = record
    return found


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def score(record: dict, expected, scoring: str) -> tuple[bool, str]:
    """(passed, why not) for a verified record."""
    if record.get("too_large"):
        return False, str(record.get("error"))
    if scoring == STRICT and record.get("status") == "raised":
        return False, str(record.get("error"))
    if scoring == CODEGEN and record.get("status") == "exited":
        return False, (f"the program ended the interpreter ({record.get('error')}); CodeGen's harness would stop "
                       "evaluating altogether")
    if "value" not in record:
        if record.get("no_argument"):
            return False, "the last print call has no argument"
        return False, str(record.get("error") or "the program printed nothing")
    try:
        value = decode(record["value"])
    except CodecError as exc:
        return False, f"the printed value cannot be read: {exc}"
    try:
        same = strict_equivalent(value, expected) if scoring == STRICT else codegen_equivalent(value, expected)
    except Exception as exc:  # a value the expected type cannot be made from is a wrong answer
        return False, f"expected {_shown(expected)}, printed {_shown(value)} ({type(exc).__name__}: {exc})"
    return (True, "") if same else (False, f"expected {_shown(expected)}, printed {_shown(value)}")


# ------------------------------------------------------------------------------------------- strict


def plain(value):
    """Series and arrays as lists, numpy scalars as Python values, a list's tuples as lists."""
    import numpy as np

    if isinstance(value, SeriesValues):
        return value.values.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [list(v) if isinstance(v, tuple) else v for v in value]
    return value


def json_key(key) -> str | None:
    """The string JSON writes for a dict key (1 -> "1", True -> "true", None -> "null"); None when JSON has no
    string for it (a tuple, an opaque object)."""
    key = plain(key)
    if isinstance(key, str):
        return key
    if isinstance(key, Opaque):
        return None
    try:
        return next(iter(json.loads(json.dumps({key: 0}))))
    except (TypeError, ValueError):
        return None


def strict_equivalent(value, expected) -> bool:
    """Whether a printed value matches an expected output read from JSON (codemill's rule)."""
    if expected is None:
        return value is None or (isinstance(value, str) and value == "None")
    if isinstance(expected, dict):
        if isinstance(value, SeriesValues):
            value = dict(zip(value.index, value.values.tolist()))
        if not isinstance(value, dict):
            return False
        keyed = {json_key(k): v for k, v in value.items()}
        if None in keyed or len(keyed) != len(value) or keyed.keys() != expected.keys():
            return False
        return all(strict_equivalent(keyed[k], expected[k]) for k in expected)
    value = plain(value)
    if type(value) is not type(expected):
        if isinstance(expected, bool):
            return str(value) == str(expected)
        value = type(expected)(value)
    if isinstance(expected, float):
        return abs(value - expected) < FLOAT_TOLERANCE
    return bool(value == expected)


# ------------------------------------------------------------------------------------------- codegen


def codegen_equivalent(o1, o2) -> bool:
    """CodeGen's check_equivalence (mtpb_exec.py), on the decoded printed value; raises where it raises."""
    import numpy as np

    if isinstance(o1, SeriesValues):  # (1) pandas: compared as arrays
        o1 = o1.values
        o2 = np.array(o2)
    elif type(o1) is list:  # (2) tuples
        if len(o1) > 0 and type(o1[0]) is tuple:
            o1 = [list(t) for t in o1]
    elif type(o1) in (np.uint8, np.int16, np.int32, np.int64):  # (3) numpy
        o1 = int(o1)
    elif type(o1) in (np.float16, np.float32, np.float64):
        o1 = float(o1)
    elif type(o1) is np.bool_:
        o1 = bool(o1)
    elif type(o1) is np.ndarray:
        o1 = o1.tolist()
    if type(o1) is not type(o2):
        if type(o2) is bool:  # bool("False") is True: compared as strings
            o1, o2 = str(o1), str(o2)
        else:
            o1 = type(o2)(o1)
    kind = type(o1)
    if kind in (str, int, set, list, bool, tuple):
        return bool(o1 == o2)
    if kind is float:
        return abs(o1 - o2) < FLOAT_TOLERANCE
    if kind is np.ndarray:
        return bool(np.allclose(o1, o2))
    raise ValueError(f"Unsupported type {kind}")


def cannot_pass_in_codegen(expected) -> str | None:
    """Why an expected output can never match under CodeGen's rule (dicts and None are unsupported types)."""
    if expected is None:
        return "the expected output is None, which CodeGen's check_equivalence never accepts"
    if isinstance(expected, dict):
        return "the expected output is a dict, which CodeGen's check_equivalence never accepts"
    return None
