"""MTPB's charts (PNG) and self-contained report.html (charts embedded, no scripts): the pass rate per category
with the modes side by side, the outcome distribution per mode, and the tables behind them, per problem
included."""

from __future__ import annotations

import html

from codemill.eval.languages import OUTCOMES
from codemill.eval.report import (
    html_image,
    html_table,
    page_start,
    percent,
    percent_with_ci,
    png_bytes,
    pyplot,
    stacked_outcome_bars,
    weak_tests_section,
    write_pages,
)

MODE_COLORS = {"multi-turn": "#1f77b4", "single-turn": "#ff7f0e"}


def category_chart(metrics: dict) -> bytes | None:
    modes = metrics.get("modes") or {}
    if not modes:
        return None
    plt = pyplot()
    categories = sorted({c for m in modes.values() for c in m["categories"]})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(modes)
    for j, (mode, m) in enumerate(modes.items()):
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(categories))]
        ys = [100 * (m["categories"].get(c, {}).get("pass_rate") or 0.0) for c in categories]
        ax.bar(xs, ys, width, color=MODE_COLORS[mode], label=f"{mode} ({percent(m['pass_rate']['value'])}% overall)")
    ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_ylabel("pass rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("MTPB pass rate per category")
    ax.legend()
    return png_bytes(fig)


def outcome_chart(metrics: dict) -> bytes | None:
    modes = metrics.get("modes") or {}
    if not modes:
        return None
    fig, ax = pyplot().subplots(figsize=(7, 3))
    stacked_outcome_bars(ax, list(modes), lambda m, o: 100 * modes[m]["outcomes"].get(o, 0) / max(modes[m]["pairs"], 1),
                         horizontal=True)
    ax.set_xlabel("% of (sample, test case) pairs")
    ax.set_xlim(0, 100)
    ax.set_title("MTPB outcomes")
    return png_bytes(fig)


def render_html(summary: dict, charts: dict[str, bytes]) -> str:
    m = summary["metrics"]
    modes = m.get("modes") or {}
    parts = page_start(summary, "codemill eval report: MTPB", "codemill eval: MTPB (multi-turn programming benchmark)",
                       "fingerprint")
    parts.append("<p>Pass rate = passed (sample, test case) pairs / all pairs, per problem, averaged over "
                 f"problems. Scoring: {html.escape(str(summary.get('scoring', 'strict')))}.</p>")
    if modes:
        ks = list(next(iter(modes.values()))["pass_at_k"])
        rows = []
        for mode, mm in modes.items():
            rows.append([mode, str(mm["problems"]), str(mm["pairs"]),
                         percent_with_ci(mm["pass_rate"]["value"], mm["pass_rate"]["ci95"]),
                         *[percent(mm["pass_at_k"][k]["value"]) for k in ks]])
        parts += ["<h2>Pass rate (%)</h2>",
                  html_table(["mode", "problems", "pairs", "pass rate [95% CI]", *[f"pass@{k}" for k in ks]], rows)]
        categories = sorted({c for mm in modes.values() for c in mm["categories"]})
        rows = [[c, *[percent(mm["categories"].get(c, {}).get("pass_rate")) for mm in modes.values()]]
                for c in categories]
        parts += ["<h2>Per category (%)</h2>", html_table(["category", *modes], rows)]
    if "categories" in charts:
        parts.append(html_image(charts["categories"], "pass rate per category"))
    if modes:
        rows = [[mode, *[str(mm["outcomes"].get(o, 0)) for o in OUTCOMES]] for mode, mm in modes.items()]
        parts += ["<h2>Outcomes</h2>", html_table(["mode", *OUTCOMES], rows)]
    if "outcomes" in charts:
        parts.append(html_image(charts["outcomes"], "outcome distribution"))
    missing = summary.get("needs_missing_files") or []
    if missing:
        parts.append("<p>Problems whose prompts read files MTPB does not ship (their programs cannot find them): "
                     + html.escape(", ".join(f"{x['task_id']} ({', '.join(x['files'])})" for x in missing)) + "</p>")
    cannot = summary.get("cannot_pass") or []
    if cannot:
        parts.append(f"<p>Scored with CodeGen's rule, which cannot pass {len(cannot)} test case(s) as written: "
                     + html.escape(", ".join(f"{c['task_id']}/{c['test_index']}" for c in cannot)) + "</p>")
    parts += weak_tests_section(summary)
    if modes:
        tids = sorted({t for mm in modes.values() for t in mm["per_problem"]}, key=lambda t: int(t.rsplit("/", 1)[1]))
        first = {t: next(mm["per_problem"][t] for mm in modes.values() if t in mm["per_problem"]) for t in tids}
        rows = [[t, first[t]["name"], first[t]["category"],
                 *[percent(mm["per_problem"].get(t, {}).get("pass_rate")) for mm in modes.values()]] for t in tids]
        parts += ["<h2>Per problem (%)</h2>", html_table(["problem", "name", "category", *modes], rows)]
    tools = summary.get("toolchains") or {}
    if tools:
        parts += ["<h2>Sandbox interpreter</h2>",
                  html_table(["tool", "version"], [[k, str(v)] for k, v in tools.items()])]
    parts.append("</body></html>")
    return "".join(parts)


def write_report(out: str, summary: dict) -> dict[str, str]:
    """charts/*.png and report.html under `out`; returns what was written."""
    m = summary["metrics"]
    return write_pages(out, {"categories": category_chart(m), "outcomes": outcome_chart(m)},
                       lambda charts: render_html(summary, charts))
