"""The CodeGeeX tokenizer (SPEC §3) as one Hugging Face `tokenizers` pipeline, whitespace rule included.

GPT-2's byte-level BPE plus `<|extratoken_1..143|>` (ids 50257-50399). CodeGeeX writes a run of L spaces,
2 <= L <= 10, as `<|extratoken_{8+L}|>` and cuts longer runs greedily from the longest; its code does that
with a Python pass over the text before GPT-2's tokenizer. Here the same rule lives inside the tokenizer:

- normalizer: one regex Replace per run length, longest first (" {10}" -> `<|extratoken_18|>`, then
  " {9}", ..., " {2}"). Replacing left to right, longest first, is exactly the greedy cut: 13 spaces become
  the 10-space token, then the 3-space token; a single space is left to the BPE, as in CodeGeeX.
- the extra tokens are added tokens with `normalized=True`, so they are found in the normalized text and
  the BPE never sees their text;
- decoder: GPT-2's byte-level decoder, then one Replace per whitespace token back to its spaces.

The saved `tokenizer.json` therefore loads with `tokenizers.Tokenizer.from_file` or
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)` and gives CodeGeeX's ids with no codemill code.
Like CodeGeeX (and GPT-2's tokenizer), the literal text of an added token in a document (`<|endoftext|>`)
is read as that token.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

ASSETS = "assets"
EOT = "<|endoftext|>"
EOT_ID = 50256                 # GPT-2's end of text: separates documents, pads the last row of a stream
N_EXTRA_TOKENS = 143           # <|extratoken_1|> .. <|extratoken_143|>, ids EOT_ID + X
VOCAB_SIZE = EOT_ID + 1 + N_EXTRA_TOKENS  # 50,400
MIN_SPACE_RUN = 2              # a single space stays with the BPE
MAX_SPACE_RUN = 10             # longer runs are cut greedily from the longest
SPACE_RUN_EXTRA_OFFSET = 8     # L spaces -> <|extratoken_{8+L}|>
TOKEN_ID_DTYPE = np.uint16     # every id of a vocabulary of at most 65,536 tokens
# The spans the whitespace tokens replace: whole 10-space cuts plus a 2..9 remainder (a 1-space remainder
# stays with the next word, as in the BPE).
_SPACE_TOKEN_SPANS = re.compile(
    f"(?: {{{MAX_SPACE_RUN}}})+(?: {{{MIN_SPACE_RUN},{MAX_SPACE_RUN - 1}}})?| {{{MIN_SPACE_RUN},{MAX_SPACE_RUN - 1}}}")


def extra_token(x: int) -> str:
    return f"<|extratoken_{x}|>"


def space_run_token(length: int) -> str:
    """The extra token that stands for a run of `length` spaces (2..10)."""
    if not MIN_SPACE_RUN <= length <= MAX_SPACE_RUN:
        raise ValueError(f"space runs of {MIN_SPACE_RUN}..{MAX_SPACE_RUN} have a token, not {length}")
    return extra_token(SPACE_RUN_EXTRA_OFFSET + length)


def assets_dir() -> Path:
    """The shipped GPT-2 + CodeGeeX tokenizer files (package data, with their README notice)."""
    return Path(str(resources.files("codemill.tokenize") / ASSETS))


def _whitespace_normalizer() -> normalizers.Normalizer:
    longest_first = range(MAX_SPACE_RUN, MIN_SPACE_RUN - 1, -1)
    return normalizers.Sequence(
        [normalizers.Replace(Regex(f" {{{n}}}"), space_run_token(n)) for n in longest_first])


def _whitespace_decoder() -> decoders.Decoder:
    # Bytes first: the byte-level decoder joins all tokens into one string (a whitespace token's text is
    # plain ASCII and passes through), so each Replace then runs once, not once per token.
    runs = range(MIN_SPACE_RUN, MAX_SPACE_RUN + 1)
    return decoders.Sequence([decoders.ByteLevel()] + [decoders.Replace(space_run_token(n), " " * n) for n in runs])


def _byte_level(tokenizer: Tokenizer) -> None:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _extra_tokens() -> list[AddedToken]:
    # Not special: they are text (whitespace), so decode(skip_special_tokens=True) must keep them.
    return [AddedToken(extra_token(x), special=False, normalized=True) for x in range(1, N_EXTRA_TOKENS + 1)]


def _add_codegeex_tokens(tokenizer: Tokenizer) -> None:
    tokenizer.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    tokenizer.add_tokens(_extra_tokens())


def gpt2_tokenizer() -> Tokenizer:
    """Plain GPT-2 (the shipped vocab and merges, no whitespace rule): the baseline for token savings."""
    a = assets_dir()
    tokenizer = Tokenizer(BPE.from_file(str(a / "vocab.json"), str(a / "merges.txt")))
    _byte_level(tokenizer)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOT, special=True, normalized=False)])
    return tokenizer


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte (vocab.json and ByteLevel tokens spell bytes with them), inverted:
    character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def codegeex_tokenizer() -> Tokenizer:
    """CodeGeeX's tokenizer: GPT-2 + 143 extra tokens + the whitespace rule, all inside `tokenizers`."""
    tokenizer = gpt2_tokenizer()
    tokenizer.normalizer = _whitespace_normalizer()
    tokenizer.decoder = _whitespace_decoder()
    _add_codegeex_tokens(tokenizer)
    _check_ids_match_assets(tokenizer)
    return tokenizer


def _check_ids_match_assets(tokenizer: Tokenizer) -> None:
    published = json.loads((assets_dir() / "added_tokens.json").read_text())
    wrong = {t: i for t, i in published.items() if tokenizer.token_to_id(t) != i}
    if wrong or tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(f"tokenizer assets do not give CodeGeeX's ids (mismatched: {sorted(wrong)[:5]})")


def train_codegeex_style_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A new byte-level BPE trained on `texts`, with CodeGeeX's whitespace rule and tokens.

    `vocab_size` counts everything: the BPE gets `vocab_size - 144` ids (the 256 bytes first), then
    `<|endoftext|>` and the 143 extra tokens follow, as in GPT-2 + CodeGeeX."""
    n_added = 1 + N_EXTRA_TOKENS
    bpe_size = vocab_size - n_added
    if bpe_size < 256 + 1 or vocab_size > np.iinfo(TOKEN_ID_DTYPE).max + 1:
        raise ValueError(f"vocab_size must be in {256 + 1 + n_added}..{np.iinfo(TOKEN_ID_DTYPE).max + 1}, "
                         f"got {vocab_size}")
    tokenizer = Tokenizer(BPE())
    _byte_level(tokenizer)
    trainer = BpeTrainer(vocab_size=bpe_size, min_frequency=min_frequency, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # The trainer does not look for added tokens, so it is shown what the BPE will see once the
    # whitespace tokens are in place: the text between runs of 2+ spaces.
    tokenizer.train_from_iterator((piece for text in texts for piece in _SPACE_TOKEN_SPANS.split(text) if piece),
                                  trainer=trainer)
    tokenizer.normalizer = _whitespace_normalizer()
    tokenizer.decoder = _whitespace_decoder()
    _add_codegeex_tokens(tokenizer)  # ids right after the BPE's, in GPT-2 + CodeGeeX's order
    return tokenizer


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """Identifies a tokenizer by its canonical JSON (what `tokenizer.json` holds)."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> Iterator[list[int]]:
    """Ids of each text, in order (the batch runs in Rust; offsets are not computed)."""
    for encoding in tokenizer.encode_batch_fast(texts, add_special_tokens=False):
        yield encoding.ids


def decode(tokenizer: Tokenizer, ids: Iterable[int]) -> str:
    """The text of `ids`, `<|endoftext|>` included (a document's literal `<|endoftext|>` comes back)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False)
