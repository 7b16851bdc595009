"""Incremental detokenisation: the byte-table path must give exactly the tokenizer's own decode."""

import random

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from codemill.serve.detok import TextState, token_bytes
from codemill.tokenize.tokenizer import codegeex_tokenizer


@pytest.fixture(scope="module")
def tok():
    return codegeex_tokenizer()


def _run(tok, ids, table, stop=()):
    state = TextState(tok, tuple(stop), table=table)
    streamed = []
    for i in ids:
        state.append(i)
        streamed.append(state.take(final=False))
    state.flush()
    streamed.append(state.take(final=True))
    return state, "".join(streamed)


def test_table_covers_codegeex_whitespace_and_special_tokens(tok):
    table = token_bytes(tok)
    assert table is not None and len(table) == tok.get_vocab_size()
    assert table[tok.token_to_id("<|extratoken_12|>")] == b"    "  # CodeGeeX's whitespace runs
    assert table[tok.token_to_id("<|endoftext|>")] == b"<|endoftext|>"
    assert token_bytes(tok) is table  # built once per tokenizer


@pytest.mark.parametrize("text", ["def f(x):\n        return x  # naïve — 漢字 😀\n\t\tpass", "  a\n" * 5,
                                  "print('héllo')  \n\n<|endoftext|>x"])
def test_table_and_window_decoding_agree_with_the_tokenizer(tok, text):
    ids = tok.encode(text).ids
    for table in (token_bytes(tok), None):
        state, streamed = _run(tok, ids, table)
        assert state.text == streamed == tok.decode(ids, skip_special_tokens=False)


def test_random_ids_including_split_and_invalid_utf8(tok):
    rng = random.Random(0)
    table = token_bytes(tok)
    for _ in range(200):
        ids = [rng.randrange(tok.get_vocab_size()) for _ in range(25)]
        state, streamed = _run(tok, ids, table)
        assert state.text == streamed == tok.decode(ids, skip_special_tokens=False)


def test_a_character_split_across_tokens_is_held_until_whole(tok):
    ids = tok.encode("😀").ids
    assert len(ids) > 1  # byte-level BPE splits the emoji's four bytes
    state = TextState(tok, (), table=token_bytes(tok))
    state.append(ids[0])
    assert state.text == ""
    for i in ids[1:]:
        state.append(i)
    assert state.text == "😀"


def test_stop_strings_in_table_mode(tok):
    ids = tok.encode("return 1\ndef g():\n").ids
    state, streamed = _run(tok, ids, token_bytes(tok), stop=["\ndef"])
    assert state.stopped and state.text == streamed == "return 1"


def test_a_tokenizer_without_byte_level_decoding_falls_back_to_windows():
    plain = Tokenizer(WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    assert token_bytes(plain) is None
