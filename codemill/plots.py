"""Figures the stages write as PNG, in one style: the language-share chart (like the paper's Figure 3:
each language's share in this run beside its share of CodeGeeX's corpus) and its shared settings."""

from __future__ import annotations

import io

from codemill.languages import LANGUAGE_NAMES, corpus_share

FIGURE_DPI = 120
BAR_COLOR = "#3b75af"
REFERENCE_COLOR = "#d1495b"


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display on workers or CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    plt.close(fig)
    return buffer.getvalue()


def language_share_png(amounts: dict[str, int], title: str, unit_label: str, reference_label: str,
                       bar_label=None) -> bytes:
    """Horizontal bars: each of the 23 languages' share of `amounts` (labelled), with CodeGeeX's share of its
    corpus as markers, largest first. `bar_label(name, share)` gives each bar's text."""
    plt = pyplot()
    total = sum(amounts.values())
    names = sorted(LANGUAGE_NAMES, key=lambda n: (-amounts.get(n, 0), -corpus_share(n)))
    shares = [100.0 * amounts.get(n, 0) / total if total else 0.0 for n in names]
    rows = list(range(len(names)))[::-1]
    fig, ax = plt.subplots(figsize=(8, 7.5))
    bars = ax.barh(rows, shares, color=BAR_COLOR, label=unit_label.format(total=total))
    ax.scatter([100.0 * corpus_share(n) for n in names], rows, marker="D", s=18, color=REFERENCE_COLOR, zorder=3,
               label=reference_label)
    for bar, share, name in zip(bars, shares, names):
        if share > 0:
            text = bar_label(name, share) if bar_label else f" {share:.2f}%"
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
    ax.set_yticks(rows, names, fontsize=8)
    ax.set_xlabel("share (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return png_bytes(fig)


def language_mix_png(kept_bytes: dict[str, int], title: str = "Language mix of the kept files") -> bytes:
    """The filter's figure: kept bytes per language beside CodeGeeX's corpus shares."""
    return language_share_png(kept_bytes, title, "this run (% of {total:,} bytes kept)",
                              "CodeGeeX corpus (% of tokens)")
