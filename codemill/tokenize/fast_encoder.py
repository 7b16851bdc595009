"""CodeGeeX's ids, computed with tiktoken's byte-level BPE: the same ids as `tokenizer.json`, faster.

The saved `tokenizer.json` (Hugging Face `tokenizers`) is what users load; the stage encodes the default
CodeGeeX tokenizer with this encoder instead, because tiktoken's BPE is about 2.7 times faster per core on
real code (measured here: 1.96M against 0.71M tokens per CPU-second on 10 MB of site-packages). The ids are
identical (tests check them against `tokenizer.json` on real code): the same GPT-2 pre-tokenization regex
and merges (GPT-2's ranks are its ids), the space runs replaced by the whitespace tokens' text first (as
CodeGeeX's own procedure does), and every added token (`<|endoftext|>`, `<|extratoken_X|>`) matched in
the text as `tokenizers` matches its added tokens. Only the default tokenizer has this fast path; a trained
BPE is encoded by `tokenizers`.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

from codemill.tokenize.reference import codegeex_whitespace_text
from codemill.tokenize.tokenizer import EOT, assets_dir, byte_level_alphabet

# GPT-2's pre-tokenization (what `pre_tokenizers.ByteLevel(use_regex=True)` splits on).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Encoded(NamedTuple):
    ids: list[int]


@functools.lru_cache(maxsize=1)
def _encoding():
    import tiktoken

    assets = assets_dir()
    vocab = json.loads((assets / "vocab.json").read_text())
    added = json.loads((assets / "added_tokens.json").read_text())
    to_byte = byte_level_alphabet()
    ranks = {bytes(to_byte[c] for c in token): i for token, i in vocab.items() if token != EOT}
    specials = {EOT: vocab[EOT], **added}
    return tiktoken.Encoding("codegeex", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials)


class FastCodeGeeXEncoder:
    """Encodes like the CodeGeeX `tokenizers.Tokenizer`, with the two calls the stage makes of it."""

    def __init__(self) -> None:
        self.encoding = _encoding()

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoded:
        return Encoded(self.encoding.encode(codegeex_whitespace_text(text), allowed_special="all"))

    def encode_batch_fast(self, texts: list[str], add_special_tokens: bool = False) -> list[Encoded]:
        return [self.encode(text) for text in texts]
