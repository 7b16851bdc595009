"""The CodeGeeX tokenizer: parity with CodeGeeX's procedure on real code, round trips, the whitespace
rule, the saved tokenizer.json without codemill, and the option to train a new BPE."""

from __future__ import annotations

import pathlib
import sysconfig

import pytest

from codemill.tokenize.reference import codegeex_whitespace_text, reference_encode, reference_tokenizer
from codemill.tokenize.tokenizer import (
    EOT_ID,
    VOCAB_SIZE,
    codegeex_tokenizer,
    decode,
    encode_texts,
    space_run_token,
    train_codegeex_style_tokenizer,
)

REAL_CODE_SUFFIXES = {".py", ".pyi", ".c", ".h", ".cpp", ".js", ".ts", ".html", ".css", ".sh", ".rs", ".md",
                      ".txt", ".json", ".cfg", ".toml", ".rst"}
REAL_CODE_FILES = 2000
MAX_FILE_BYTES = 40_000  # keeps the two tokenizations of 2,000 files to seconds


def real_code(n_files: int = REAL_CODE_FILES) -> list[str]:
    """`n_files` source files of this environment's site-packages (spread over its packages), as text."""
    root = pathlib.Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in root.rglob("*")
                   if p.suffix in REAL_CODE_SUFFIXES and p.is_file() and 0 < p.stat().st_size <= MAX_FILE_BYTES)
    step = max(1, len(files) // n_files)
    texts = []
    for path in files[::step]:
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts[:n_files]


def binary_as_text(n_files: int = 20, n_bytes: int = 4096) -> list[str]:
    """Bytes of compiled extension modules read as Latin-1: every code point 0-255, NULs, lone
    continuation bytes: text that looks like invalid byte sequences."""
    root = pathlib.Path(sysconfig.get_paths()["platlib"])
    return [p.read_bytes()[:n_bytes].decode("latin-1") for p in sorted(root.rglob("*.so"))[:n_files]]


EDGE_CASES = [
    "", " ", "  ", " " * 10, " " * 11, " " * 13, " " * 20, " " * 21, " " * 37 + "x",
    "def f():\n\treturn 1\n", "a\r\nb\r\n  c\r\n", "trailing   \nspaces  ", "\t \t  \t   \n",
    "naïve café — 日本語  ключ  🚀👩‍👩‍👧 \u200b\ufeff\u202e rtl", "\x00\x01\x7f\x80\xff\ufffd",
    "Ã©Ã¨ mojibake \udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "e\u0301 combining", "x<|endoftext|>y", "  <|endoftext|>  ", "<|extratoken_5|>",
]


@pytest.fixture(scope="module")
def tokenizer():
    return codegeex_tokenizer()


@pytest.fixture(scope="module")
def reference():
    return reference_tokenizer()


@pytest.fixture(scope="module")
def corpus():
    return real_code()


def test_vocabulary_is_codegeex(tokenizer):
    assert tokenizer.get_vocab_size() == VOCAB_SIZE == 50_400
    assert tokenizer.token_to_id("<|endoftext|>") == EOT_ID
    for length in range(2, 11):
        assert tokenizer.token_to_id(space_run_token(length)) == 50256 + 8 + length


@pytest.mark.parametrize("spaces, expected", [
    (1, None), (2, [10]), (10, [18]), (11, [18, None]), (13, [18, 11]), (20, [18, 18]), (23, [18, 18, 11]),
])
def test_space_runs_are_cut_greedily_from_the_longest(tokenizer, spaces, expected):
    ids = tokenizer.encode("x" + " " * spaces + "y").ids
    x, y_alone, y_spaced = (tokenizer.token_to_id(t) for t in ("x", "y", "Ġy"))
    if expected is None:  # one space stays with the BPE: " y"
        assert ids == [x, y_spaced]
    elif expected[-1] is None:
        assert ids == [x] + [50256 + e for e in expected[:-1]] + [y_spaced]
    else:
        assert ids == [x] + [50256 + e for e in expected] + [y_alone]


def test_parity_with_codegeex_procedure_on_real_code(tokenizer, reference, corpus):
    assert len(corpus) >= 1500
    ours = list(encode_texts(tokenizer, corpus))
    theirs = reference_encode(reference, corpus)
    mismatched = [i for i in range(len(corpus)) if ours[i] != theirs[i]]
    assert not mismatched, f"{len(mismatched)} of {len(corpus)} files differ, first: {corpus[mismatched[0]][:200]!r}"
    assert sum(map(len, ours)) > 1_000_000
    # the corpus exercises the rule: whitespace tokens, including cut runs, are there
    used = {i for ids in ours for i in ids if i > EOT_ID}
    assert {50256 + 8 + n for n in (2, 4, 8, 10)} <= used


def test_parity_on_edge_cases(tokenizer, reference):
    texts = EDGE_CASES + binary_as_text()
    assert list(encode_texts(tokenizer, texts)) == reference_encode(reference, texts)


def test_round_trip_on_every_document(tokenizer, corpus):
    texts = corpus + [t for t in EDGE_CASES if "extratoken" not in t] + binary_as_text()
    failed = [t for t, ids in zip(texts, encode_texts(tokenizer, texts)) if decode(tokenizer, ids) != t]
    assert not failed, f"{len(failed)} documents do not round-trip, first: {failed[0][:200]!r}"


def test_reference_replacement_matches_codegeex_docstring():
    assert codegeex_whitespace_text("a\n  b\n   c") == "a\n<|extratoken_10|>b\n<|extratoken_11|>c"


def test_saved_tokenizer_needs_no_codemill(tokenizer, corpus, tmp_path):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    plain = Tokenizer.from_file(str(path))
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path))
    texts = corpus[:200] + EDGE_CASES
    expected = list(encode_texts(tokenizer, texts))
    assert [e.ids for e in plain.encode_batch(texts)] == expected
    assert hf(texts, add_special_tokens=False)["input_ids"] == expected
    for text, ids in zip(texts[:200], expected):
        assert plain.decode(ids, skip_special_tokens=False) == text
        assert hf.decode(ids, clean_up_tokenization_spaces=False) == text


def test_trained_tokenizer_keeps_whitespace_and_special_tokens(corpus):
    vocab_size = 2000
    trained = train_codegeex_style_tokenizer(corpus[:300], vocab_size=vocab_size)
    assert trained.get_vocab_size() == vocab_size
    eot = trained.token_to_id("<|endoftext|>")
    assert eot == vocab_size - 144
    assert [trained.token_to_id(f"<|extratoken_{x}|>") for x in (1, 143)] == [eot + 1, eot + 143]
    ids = trained.encode("x" + " " * 13 + "y").ids
    assert ids[1:3] == [trained.token_to_id(space_run_token(10)), trained.token_to_id(space_run_token(3))]
    # space runs are the whitespace tokens' job: no BPE token holds two spaces ("ĠĠ" in byte-level form)
    assert not [t for t in trained.get_vocab() if "ĠĠ" in t]
    texts = corpus[300:400] + EDGE_CASES[:-1]
    for text, ids in zip(texts, encode_texts(trained, texts)):
        assert decode(trained, ids) == text
    # trained on code, it needs fewer ids for code than its alphabet alone would
    assert sum(len(i) for i in encode_texts(trained, corpus[300:400])) < 0.6 * sum(len(t.encode()) for t in corpus[300:400])


def test_train_refuses_vocabularies_beyond_uint16():
    with pytest.raises(ValueError, match="vocab_size"):
        train_codegeex_style_tokenizer(["x"], vocab_size=70_000)
