"""The proof of a pass (what the scorer accepts) and the codec values cross the sandbox with (what a hostile
sender can and cannot make the receiver believe)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from codemill.eval import proof
from codemill.eval.harness import codec
from codemill.eval.harness.codec import CodecError, Opaque, SeriesValues


def test_only_the_runs_key_verifies_a_proof():
    key, other = proof.new_key(), proof.new_key()
    assert key != other and len(key) == 2 * proof.KEY_BYTES
    line = proof.expected_line(key, 7)
    assert proof.verified_count(key, [line]) == 7
    assert proof.verified_count(other, [line]) is None
    # The key itself, a zero MAC, a changed count: none verifies.
    assert proof.verified_count(key, [f"CODEMILL-PASS 7 {key.decode()}"]) is None
    assert proof.verified_count(key, [f"CODEMILL-PASS 7 {'0' * 64}"]) is None
    forged = line.replace("CODEMILL-PASS 7", "CODEMILL-PASS 8")
    assert proof.verified_count(key, [forged]) is None
    # Among fakes, the real line still counts; the capture pattern finds it anywhere in a line.
    assert proof.verified_count(key, [f"CODEMILL-PASS 1 {'f' * 64}", line]) == 7
    assert proof.PROOF_LINE.search(b"noise" + line.encode() + b"more").group(0).decode() == line


VALUES = [None, True, False, 0, -3, 2 ** 80, 1.5, float("inf"), float("-inf"), "", "x\ny", [1, [2, "a"]], (1, (2,)),
          {"a": 1, 2: [3], (1, 2): None}, {1, 2}, frozenset({3}), b"\x00\xff", 1 + 2j, []]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_data_crosses_exactly(value):
    back = codec.loads(codec.dumps(value))
    assert type(back) is type(value) and back == value


def test_nan_and_numpy_and_pandas_cross_as_their_types():
    assert math.isnan(codec.loads(codec.dumps(float("nan"))))
    for value in (np.int64(3), np.float32(0.5), np.bool_(True), np.str_("a"), np.uint8(7)):
        back = codec.loads(codec.dumps(value))
        assert type(back) is type(value) and back == value
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    back = codec.loads(codec.dumps(arr))
    assert back.dtype == arr.dtype and (back == arr).all()
    series = codec.loads(codec.dumps(pd.Series([1.5, 2.5], index=["a", "b"])))
    assert isinstance(series, SeriesValues) and series.values.tolist() == [1.5, 2.5] and series.index == ["a", "b"]


def test_an_object_that_claims_to_equal_anything_arrives_as_an_opaque_that_equals_nothing():
    class Yes:
        def __eq__(self, other):
            return True

        __hash__ = object.__hash__

        def __str__(self):
            return "yes"

    class YesInt(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    for value in (Yes(), YesInt(3), iter([1]), [Yes()], {"k": YesInt(1)}):
        back = codec.loads(codec.dumps(value))
        flat = back if not isinstance(back, list | dict) else (back[0] if isinstance(back, list) else back["k"])
        assert isinstance(flat, Opaque)
        assert flat != flat.__class__ and back != value
    opaque = codec.loads(codec.dumps(Yes()))
    assert str(opaque) == "yes" and opaque != "yes" and opaque != opaque.__class__("Yes", "yes", "?")
    assert int(codec.loads(codec.dumps(YesInt(3)))) == 3  # conversions as the original did them


@pytest.mark.parametrize("text,why", [
    ('{"__import__": "os"}', "unknown record"),
    ('{"o": "X", "int": "not an int"}', "expected a int"),
    ('{"f": "1e999"}', "bad float"),
    ('{"b": "***"}', "malformed"),
    ('{"d": [[[1], 2]]}', "malformed"),          # a list cannot be a key
    ("[" * 5000 + "]" * 5000, "nested deeper|not JSON"),
    ("not json", "not JSON"),
])
def test_a_hostile_message_is_refused_not_executed(text, why):
    with pytest.raises(CodecError, match=why):
        codec.loads(text)


def test_encoding_is_json_without_nan_literals():
    text = codec.dumps([float("nan"), {"a": float("inf")}])
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
