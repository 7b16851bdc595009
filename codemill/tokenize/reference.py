"""CodeGeeX's own tokenization procedure, the reference the project's tokenizer is held to (tests) and
measured against (benchmarks): Python string replacement of space runs by the extra tokens' text, longest
run first, then GPT-2's fast tokenizer from `transformers`, built from the same shipped files (no hub).
"""

from __future__ import annotations

from codemill.tokenize.tokenizer import MAX_SPACE_RUN, MIN_SPACE_RUN, assets_dir, space_run_token


def codegeex_whitespace_text(text: str) -> str:
    """Runs of spaces replaced by the extra tokens' text, as CodeGeeX's `encode_whitespaces` does."""
    for n in range(MAX_SPACE_RUN, MIN_SPACE_RUN - 1, -1):
        text = text.replace(" " * n, space_run_token(n))
    return text


def reference_tokenizer():
    """GPT-2's fast tokenizer from the shipped vocab, merges and added tokens (`transformers` needed)."""
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(str(assets_dir()), local_files_only=True)


def reference_encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """CodeGeeX's ids for `texts`, by its procedure: one document at a time, as its `encode_code` does."""
    return [tokenizer(codegeex_whitespace_text(t), add_special_tokens=False)["input_ids"] for t in texts]
