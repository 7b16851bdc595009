"""The tokenize stage's `stats.json` and its figure: tokens per language, and what the whitespace tokens save
against plain GPT-2 on this corpus."""

from __future__ import annotations

from codemill.languages import corpus_share
from codemill.plots import language_share_png


def whitespace_savings(summary: list[dict]) -> dict:
    """On the statistics sample: ids with CodeGeeX's tokenizer, ids with plain GPT-2, and the share saved."""
    documents = sum(s["sample_documents"] for s in summary)
    ours = sum(s["sample_tokens"] for s in summary)
    gpt2 = sum(s["sample_gpt2_tokens"] for s in summary)
    return {"sample_documents": documents, "tokens": ours, "gpt2_tokens": gpt2,
            "saved_fraction": round(1 - ours / gpt2, 6) if gpt2 else None}


def tokenize_stats(manifest: dict, summary: list[dict], rejected: dict[str, int], seconds: float,
                   packing: dict) -> dict:
    """Everything worth a glance after a run; the shard list stays in manifest.json. `packing`: what
    `chunks.packing_stats` says chunking cost; the rows it padded are counted here from the shards."""
    splits = {name: {k: v for k, v in split.items() if k != "shards"} | {"shards": len(split["shards"])}
              for name, split in manifest["splits"].items()}
    tokens = tokens_per_language(manifest)
    total = sum(tokens.values())
    doc_tokens = sum(s["doc_tokens"] for s in summary)
    return {
        "tokenizer": manifest["tokenizer"],
        "seq_len": manifest["seq_len"],
        "splits": splits,
        "languages": {name: {"tokens": n, "share": round(n / total, 6) if total else 0.0,
                             "codegeex_share": round(corpus_share(name), 6)}
                      for name, n in sorted(tokens.items(), key=lambda kv: -kv[1])},
        "whitespace": whitespace_savings(summary),
        "packing": {**packing, "padded_rows": sum(split["padded_rows"] for split in manifest["splits"].values())},
        "rejected": dict(sorted(rejected.items())),
        "throughput": {"seconds": round(seconds, 3), "document_tokens": doc_tokens,
                       "tokens_per_s": round(doc_tokens / seconds, 1) if seconds > 0 else None},
    }


def tokens_per_language(manifest: dict) -> dict[str, int]:
    """Ids before padding (tags and separators included), both splits together."""
    tokens: dict[str, int] = {}
    for split in manifest["splits"].values():
        for language, counts in split["languages"].items():
            tokens[language] = tokens.get(language, 0) + counts["tokens"]
    return tokens


def tokens_per_language_png(tokens: dict[str, int], title: str = "Tokens per language") -> bytes:
    """Each language's share of this run's tokens (labelled with the share and the count) beside CodeGeeX's
    share of its corpus (SPEC §2)."""
    return language_share_png(tokens, title, "this run (% of {total:,} tokens)",
                              "CodeGeeX corpus (% of 158.7B tokens)",
                              lambda name, share: f" {share:.1f}% ({tokens[name] / 1e6:,.2f}M)")
