"""Values as JSON, kept exactly: what crosses between a HumanEval-X Python test and the candidate it calls in
another process, and what an MTPB program printed. Copied into the sandbox (standard library only).

Only data crosses, each value as exactly its type: None, bool, int, float (inf and nan too), str, bytes,
complex, list, tuple, dict, set, frozenset, and numpy scalars and arrays and pandas Series where the sender
uses numpy. Anything else (a class of the sample's, a generator, an int subclass whose `==` always says yes)
becomes an `Opaque` record of its type name, repr and str (and int, float and list conversions, which
MTPB's CodeGen scoring casts with); an Opaque equals nothing. Decoding runs no code of the sender: it builds
those types from JSON and nothing else, so a hostile sender can at worst send a wrong value.
"""

from __future__ import annotations

import base64
import json
import math
import sys

MAX_DEPTH = 100
SHOWN_CHARS = 300


class CodecError(ValueError):
    """A message that is not a value this codec writes."""


class Opaque:
    """A value that is not data: it equals nothing but itself and converts as the original did."""

    def __init__(self, type_name: str, text: str, shown: str, as_int=None, as_float=None, as_list=None):
        self.type_name, self.text, self.shown = type_name, text, shown
        self.as_int, self.as_float, self.as_list = as_int, as_float, as_list

    def __eq__(self, other):
        return self is other

    def __hash__(self):
        return id(self)

    def __repr__(self):
        return self.shown

    def __str__(self):
        return self.text

    def __int__(self):
        if self.as_int is None:
            raise TypeError(f"int() of a {self.type_name} failed where it ran")
        return self.as_int

    def __float__(self):
        if self.as_float is None:
            raise TypeError(f"float() of a {self.type_name} failed where it ran")
        return self.as_float

    def __iter__(self):
        if self.as_list is None:
            raise TypeError(f"'{self.type_name}' object was not iterable where it ran")
        return iter(self.as_list)


def _numpy():
    return sys.modules.get("numpy")


def _pandas():
    return sys.modules.get("pandas")


def encode(value, depth: int = 0):
    """A JSON-able form of `value` (see the module's docstring)."""
    if depth > MAX_DEPTH:
        raise CodecError(f"nested deeper than {MAX_DEPTH}")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else {"f": repr(value)}
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"t": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"s" if t is set else "fs": [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"b": base64.b64encode(value).decode()}
    if t is complex:
        return {"c": [encode(value.real), encode(value.imag)]}
    np = _numpy()
    if np is not None and isinstance(value, np.generic) and type(value).__module__ == "numpy":
        return {"np": value.dtype.str, "v": encode(value.item(), depth + 1)}
    if np is not None and t is np.ndarray:
        return {"nd": value.dtype.str, "shape": list(value.shape), "v": encode(value.tolist(), depth + 1)}
    pd = _pandas()
    if pd is not None and t is pd.Series:
        return {"series": encode(value.to_numpy(), depth + 1), "index": encode(list(value.index), depth + 1)}
    return _opaque(value, depth)


def _opaque(value, depth: int) -> dict:
    def attempt(convert):
        try:
            return convert(value)
        except Exception:
            return None

    as_list = attempt(list) if depth < 2 else None
    return {"o": type(value).__qualname__, "str": attempt(str), "repr": (attempt(repr) or "?")[:SHOWN_CHARS],
            "int": attempt(lambda v: encode(int(v))), "float": attempt(lambda v: encode(float(v))),
            "list": None if as_list is None else attempt(lambda _: encode(as_list, depth + 1))}


def decode(data, depth: int = 0):
    """The value `encode` was given (numpy and pandas values need numpy where this runs)."""
    if depth > MAX_DEPTH + 2:
        raise CodecError(f"nested deeper than {MAX_DEPTH}")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode(v, depth + 1) for v in data]
    if type(data) is not dict or len(data) == 0:
        raise CodecError(f"not an encoded value: {type(data).__name__}")
    try:
        return _decode_tagged(data, depth)
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"malformed {sorted(data)[0]!r} record ({type(exc).__name__}: {exc})") from None


def _decode_tagged(data: dict, depth: int):
    if "f" in data:
        if data["f"] not in ("inf", "-inf", "nan"):
            raise CodecError(f"bad float {data['f']!r}")
        return float(data["f"])
    if "t" in data:
        return tuple(decode(v, depth + 1) for v in data["t"])
    if "d" in data:
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in data["d"]}
    if "s" in data:
        return {decode(v, depth + 1) for v in data["s"]}
    if "fs" in data:
        return frozenset(decode(v, depth + 1) for v in data["fs"])
    if "b" in data:
        return base64.b64decode(data["b"], validate=True)
    if "c" in data:
        return complex(decode(data["c"][0]), decode(data["c"][1]))
    if "np" in data:
        import numpy as np
        return np.array(decode(data["v"], depth + 1), dtype=np.dtype(str(data["np"])))[()]
    if "nd" in data:
        import numpy as np
        values = decode(data["v"], depth + 1)
        return np.array(values, dtype=np.dtype(str(data["nd"]))).reshape([int(n) for n in data["shape"]])
    if "series" in data:
        return SeriesValues(decode(data["series"], depth + 1), decode(data["index"], depth + 1))
    if "o" in data:
        return Opaque(str(data["o"]), str(data.get("str") or ""), str(data.get("repr") or "?"),
                      _number(data.get("int"), int), _number(data.get("float"), float),
                      None if data.get("list") is None else decode(data["list"], depth + 1))
    raise CodecError(f"unknown record {sorted(data)}")


def _number(data, kind):
    if data is None:
        return None
    value = decode(data)
    if type(value) is not kind:
        raise CodecError(f"expected a {kind.__name__}")
    return value


class SeriesValues:
    """A pandas Series as its values (a numpy array) and index, for scoring where pandas is not needed."""

    def __init__(self, values, index: list):
        self.values, self.index = values, index

    def __repr__(self):
        return f"Series({self.values!r})"


def dumps(value) -> str:
    return json.dumps(encode(value), allow_nan=False, separators=(",", ":"))


def loads(text: str):
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"not JSON ({type(exc).__name__})") from None
    return decode(data)
