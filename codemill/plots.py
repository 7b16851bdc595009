"""The language mix of the kept files as a PNG, like the paper's Figure 3 (the share of each language in
the corpus), with CodeGeeX's own shares beside it for comparison."""

from __future__ import annotations

import io

from codemill.languages import LANGUAGE_NAMES, corpus_share

FIGURE_DPI = 120


def language_mix_png(kept_bytes: dict[str, int], title: str = "Language mix of the kept files") -> bytes:
    """A horizontal bar chart: each language's share of the kept bytes (bars, labelled) and of
    CodeGeeX's 158.7B-token corpus (markers), for the 23 languages, largest first."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers or CI
    import matplotlib.pyplot as plt

    total = sum(kept_bytes.values())
    names = sorted(LANGUAGE_NAMES, key=lambda n: (-kept_bytes.get(n, 0), -corpus_share(n)))
    ours = [100.0 * kept_bytes.get(n, 0) / total if total else 0.0 for n in names]
    paper = [100.0 * corpus_share(n) for n in names]

    fig, ax = plt.subplots(figsize=(8, 7.5))
    rows = list(range(len(names)))[::-1]
    bars = ax.barh(rows, ours, color="#3b75af", label=f"this run (% of {total / 1e6:,.1f} MB kept)")
    ax.scatter(paper, rows, marker="D", s=18, color="#d1495b", zorder=3, label="CodeGeeX corpus (% of tokens)")
    for bar, share in zip(bars, ours):
        if share > 0:
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {share:.2f}%", va="center", fontsize=7)
    ax.set_yticks(rows, names, fontsize=8)
    ax.set_xlabel("share (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return buffer.getvalue()
