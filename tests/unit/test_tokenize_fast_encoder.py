"""The fast encoder gives exactly the ids of the saved tokenizer.json, on real code and on edge cases."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

from codemill.tokenize.fast_encoder import FastCodeGeeXEncoder
from codemill.tokenize.tokenizer import codegeex_tokenizer

EDGE_CASES = [
    "", " ", "  ", "x" + " " * 13 + "y", " " * 11 + "z", "\tif x:\r\n\t\treturn  1  \n", "naïve = 'café'  # ünïcödé\n",
    "a<|endoftext|>b", "lit <|extratoken_12|> and <|extratoken_143|>", "'s 've 'll 123 4567 ...!!", "\x00\x01\x7f",
    "emoji 😀  done", "x = [1,  2,   3,    4]\n" * 3, "    " * 20 + "deep\n",
]


def real_code(n_files: int = 1500) -> list[str]:
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(site.rglob("*.py")) + sorted(site.rglob("*.h"))
    random.Random(7).shuffle(files)
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
        if len(texts) == n_files:
            break
    return texts


def test_same_ids_as_tokenizer_json():
    reference, fast = codegeex_tokenizer(), FastCodeGeeXEncoder()
    texts = EDGE_CASES + real_code()
    expected = [e.ids for e in reference.encode_batch_fast(texts, add_special_tokens=False)]
    got = [e.ids for e in fast.encode_batch_fast(texts)]
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    assert not mismatched, f"{len(mismatched)} texts differ, first: {texts[mismatched[0]][:200]!r}"
    assert fast.encode(EDGE_CASES[3]).ids == reference.encode(EDGE_CASES[3], add_special_tokens=False).ids
