"""The tokenize stage's `stats.json` and its figure: tokens per language, and what the whitespace tokens save
against plain GPT-2 on this corpus."""

from __future__ import annotations

import io

from codemill.languages import LANGUAGE_NAMES, corpus_share

FIGURE_DPI = 120


def whitespace_savings(summary: list[dict]) -> dict:
    """On the statistics sample: ids with CodeGeeX's tokenizer, ids with plain GPT-2, and the share saved."""
    documents = sum(s["sample_documents"] for s in summary)
    ours = sum(s["sample_tokens"] for s in summary)
    gpt2 = sum(s["sample_gpt2_tokens"] for s in summary)
    return {"sample_documents": documents, "tokens": ours, "gpt2_tokens": gpt2,
            "saved_fraction": round(1 - ours / gpt2, 6) if gpt2 else None}


def tokenize_stats(manifest: dict, summary: list[dict], rejected: dict[str, int], seconds: float) -> dict:
    """Everything worth a glance after a run; the shard list stays in manifest.json."""
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
    """Horizontal bars: each language's share of this run's tokens (labelled with the share and the count),
    with CodeGeeX's share of its corpus as markers for comparison (SPEC §2), largest first."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers or CI
    import matplotlib.pyplot as plt

    total = sum(tokens.values())
    names = sorted(LANGUAGE_NAMES, key=lambda n: (-tokens.get(n, 0), -corpus_share(n)))
    shares = [100.0 * tokens.get(n, 0) / total if total else 0.0 for n in names]
    rows = list(range(len(names)))[::-1]
    fig, ax = plt.subplots(figsize=(8, 7.5))
    bars = ax.barh(rows, shares, color="#3b75af", label=f"this run (% of {total / 1e6:,.2f}M tokens)")
    ax.scatter([100.0 * corpus_share(n) for n in names], rows, marker="D", s=18, color="#d1495b", zorder=3,
               label="CodeGeeX corpus (% of 158.7B tokens)")
    for bar, share, name in zip(bars, shares, names):
        if share > 0:
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                    f" {share:.1f}% ({tokens[name] / 1e6:,.2f}M)", va="center", fontsize=7)
    ax.set_yticks(rows, names, fontsize=8)
    ax.set_xlabel("share of tokens (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return buffer.getvalue()
