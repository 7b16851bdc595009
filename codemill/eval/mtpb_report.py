"""MTPB's charts (PNG) and self-contained report.html (charts embedded, no scripts): the pass rate per category
with the modes side by side, the outcome distribution per mode, and the tables behind them, per problem
included."""

from __future__ import annotations

import html

from codemill import storage
from codemill.eval.languages import OUTCOMES
from codemill.eval.report import OUTCOME_COLORS, _fmt, _img, _plt, _png, _table
from codemill.stages import EVAL_CHARTS, EVAL_REPORT

MODE_COLORS = {"multi-turn": "#1f77b4", "single-turn": "#ff7f0e"}


def category_chart(metrics: dict) -> bytes | None:
    modes = metrics.get("modes") or {}
    if not modes:
        return None
    plt = _plt()
    categories = sorted({c for m in modes.values() for c in m["categories"]})
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(modes)
    for j, (mode, m) in enumerate(modes.items()):
        xs = [i + (j - (len(modes) - 1) / 2) * width for i in range(len(categories))]
        ys = [100 * (m["categories"].get(c, {}).get("pass_rate") or 0.0) for c in categories]
        ax.bar(xs, ys, width, color=MODE_COLORS[mode], label=f"{mode} ({_fmt(m['pass_rate']['value'])}% overall)")
    ax.set_xticks(range(len(categories)), categories, rotation=20)
    ax.set_ylabel("pass rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("MTPB pass rate per category")
    ax.legend()
    return _png(fig)


def outcome_chart(metrics: dict) -> bytes | None:
    modes = metrics.get("modes") or {}
    if not modes:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(modes)
    lefts = [0.0] * len(names)
    for outcome in OUTCOMES:
        shares = [100 * modes[m]["outcomes"].get(outcome, 0) / max(modes[m]["pairs"], 1) for m in names]
        ax.barh(names, shares, left=lefts, color=OUTCOME_COLORS[outcome], label=outcome.replace("_", " "))
        lefts = [a + b for a, b in zip(lefts, shares)]
    ax.set_xlabel("% of (sample, test case) pairs")
    ax.set_xlim(0, 100)
    ax.set_title("MTPB outcomes")
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))
    return _png(fig)


def render_html(summary: dict, charts: dict[str, bytes]) -> str:
    m = summary["metrics"]
    modes = m.get("modes") or {}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>codemill eval report: MTPB</title><style>",
             "body{font-family:sans-serif;margin:24px;background:#fff;color:#222}table{border-collapse:collapse;"
             "margin:8px 0 24px}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "th{background:#eee}img{max-width:100%;display:block;margin:8px 0 24px}.warn{color:#b00;font-weight:bold}",
             "</style></head><body><h1>codemill eval: MTPB (multi-turn programming benchmark)</h1>"]
    check = summary.get("benchmark_check") or {}
    if not check.get("passed"):
        parts.append(f"<p class='warn'>Scored without a passing benchmark check: "
                     f"{html.escape(str(check.get('why_not')))}</p>")
    parts.append(f"<p>{summary.get('samples', 0)} samples; fingerprint "
                 f"{html.escape(str(summary.get('fingerprint')))}; sandbox "
                 f"{html.escape(str((summary.get('sandbox') or {}).get('sandbox')))}. Pass rate = passed (sample, "
                 "test case) pairs / all pairs, per problem, averaged over problems.</p>")
    if modes:
        ks = list(next(iter(modes.values()))["pass_at_k"])
        rows = []
        for mode, mm in modes.items():
            ci = mm["pass_rate"]["ci95"]
            rows.append([mode, str(mm["problems"]), str(mm["pairs"]),
                         _fmt(mm["pass_rate"]["value"]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""),
                         *[_fmt(mm["pass_at_k"][k]["value"]) for k in ks]])
        parts += ["<h2>Pass rate (%)</h2>", _table(["mode", "problems", "pairs", "pass rate [95% CI]",
                                                     *[f"pass@{k}" for k in ks]], rows)]
        categories = sorted({c for mm in modes.values() for c in mm["categories"]})
        rows = [[c, *[_fmt(mm["categories"].get(c, {}).get("pass_rate")) for mm in modes.values()]]
                for c in categories]
        parts += ["<h2>Per category (%)</h2>", _table(["category", *modes], rows)]
    if "categories" in charts:
        parts.append(_img(charts["categories"], "pass rate per category"))
    if modes:
        rows = [[mode, *[str(mm["outcomes"].get(o, 0)) for o in OUTCOMES]] for mode, mm in modes.items()]
        parts += ["<h2>Outcomes</h2>", _table(["mode", *OUTCOMES], rows)]
    if "outcomes" in charts:
        parts.append(_img(charts["outcomes"], "outcome distribution"))
    missing = summary.get("needs_missing_files") or []
    if missing:
        parts.append("<p>Problems whose prompts read files MTPB does not ship (their programs cannot find them): "
                     + html.escape(", ".join(f"{x['task_id']} ({', '.join(x['files'])})" for x in missing)) + "</p>")
    if modes:
        tids = sorted({t for mm in modes.values() for t in mm["per_problem"]}, key=lambda t: int(t.rsplit("/", 1)[1]))
        first = {t: next(mm["per_problem"][t] for mm in modes.values() if t in mm["per_problem"]) for t in tids}
        rows = [[t, first[t]["name"], first[t]["category"],
                 *[_fmt(mm["per_problem"].get(t, {}).get("pass_rate")) for mm in modes.values()]] for t in tids]
        parts += ["<h2>Per problem (%)</h2>", _table(["problem", "name", "category", *modes], rows)]
    tools = summary.get("toolchains") or {}
    if tools:
        parts += ["<h2>Sandbox interpreter</h2>", _table(["tool", "version"], [[k, str(v)] for k, v in tools.items()])]
    parts.append("</body></html>")
    return "".join(parts)


def write_report(out: str, summary: dict) -> dict[str, str]:
    """charts/*.png and report.html under `out`; returns what was written."""
    m = summary["metrics"]
    charts = {name: png for name, png in (("categories", category_chart(m)), ("outcomes", outcome_chart(m))) if png}
    written = {}
    for name, png in charts.items():
        uri = storage.join(out, EVAL_CHARTS, f"{name}.png")
        storage.write_bytes(uri, png)
        written[name] = uri
    report = storage.join(out, EVAL_REPORT)
    storage.write_bytes(report, render_html(summary, charts).encode())
    written["report"] = report
    return written
