"""Charts (PNG) and a self-contained report.html (the charts embedded as data URIs, no external files, no
scripts) from an eval summary: pass@k per language with 95% CIs, the outcome distribution per language (the
paper's Figure 7), the translation heatmap, the tables behind them, and the scored tasks whose tests accepted
a wrong answer in the benchmark check."""

from __future__ import annotations

import base64
import html
import io

from codemill import storage
from codemill.eval.languages import OUTCOMES
from codemill.stages import EVAL_CHARTS, EVAL_REPORT

OUTCOME_COLORS = {"passed": "#2ca02c", "wrong_answer": "#d62728", "runtime_error": "#ff7f0e",
                  "compile_error": "#9467bd", "timeout": "#8c564b", "memory_limit": "#e377c2", "unfinished": "#7f7f7f",
                  "infrastructure_error": "#17becf"}
LANGUAGE_COLORS = {"Python": "#1f77b4", "C++": "#ff7f0e", "Java": "#2ca02c", "JavaScript": "#d62728", "Go": "#9467bd"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def stacked_outcome_bars(ax, names: list[str], share_of, horizontal: bool = False) -> None:
    """One bar per name, stacked by outcome in OUTCOMES order; share_of(name, outcome) is its percentage."""
    base = [0.0] * len(names)
    for outcome in OUTCOMES:
        shares = [share_of(name, outcome) for name in names]
        style = dict(color=OUTCOME_COLORS[outcome], label=outcome.replace("_", " "))
        if horizontal:
            ax.barh(names, shares, left=base, **style)
        else:
            ax.bar(names, shares, bottom=base, **style)
        base = [a + b for a, b in zip(base, shares)]
    ax.legend(loc="center left", bbox_to_anchor=(1, 0.5))


def pass_at_k_chart(metrics: dict) -> bytes | None:
    langs = (metrics.get("generation") or {}).get("languages") or {}
    if not langs:
        return None
    plt = pyplot()
    ks = list(next(iter(langs.values()))["pass_at_k"])
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(ks), 1)
    for j, k in enumerate(ks):
        xs, ys, errs = [], [], [[], []]
        for i, m in enumerate(langs.values()):
            v = m["pass_at_k"][k]
            if v["value"] is None:
                continue
            xs.append(i + (j - (len(ks) - 1) / 2) * width)
            ys.append(100 * v["value"])
            lo, hi = v["ci95"] or (v["value"], v["value"])
            errs[0].append(100 * (v["value"] - lo))
            errs[1].append(100 * (hi - v["value"]))
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=f"pass@{k}")
    ax.set_xticks(range(len(langs)), list(langs))
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("pass@k per language (95% bootstrap CI over problems)")
    ax.legend()
    return png_bytes(fig)


def outcome_chart(metrics: dict) -> bytes | None:
    dist = metrics.get("outcomes") or {}
    if not dist:
        return None
    fig, ax = pyplot().subplots(figsize=(8, 4))
    stacked_outcome_bars(ax, list(dist), lambda lang, o: 100 * dist[lang].get(o, 0) / (sum(dist[lang].values()) or 1))
    ax.set_ylabel("% of samples")
    ax.set_ylim(0, 100)
    ax.set_title("Outcomes per language")
    return png_bytes(fig)


def translation_chart(metrics: dict) -> bytes | None:
    tr = metrics.get("translation") or {}
    matrix = tr.get("matrix") or {}
    if not matrix:
        return None
    plt = pyplot()
    langs = sorted({s for s in matrix} | {t for row in matrix.values() for t in row},
                   key=lambda x: list(LANGUAGE_COLORS).index(x) if x in LANGUAGE_COLORS else 99)
    grid = [[(matrix.get(s, {}).get(t)) for t in langs] for s in langs]
    values = [[100 * v if v is not None else float("nan") for v in row] for row in grid]
    fig, ax = plt.subplots(figsize=(6, 5))
    im = ax.imshow(values, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, "–" if v is None else f"{100 * v:.1f}", ha="center", va="center", color="w")
    fig.colorbar(im, ax=ax, label=f"pass@{tr.get('k', 1)} (%)")
    ax.set_title("Translation")
    return png_bytes(fig)


def percent(v: float | None) -> str:
    return "undefined" if v is None else f"{100 * v:.2f}"


def percent_with_ci(value: float | None, ci: list[float] | None) -> str:
    """A percentage, followed by its 95% interval in brackets when there is one."""
    return percent(value) + (f" [{percent(ci[0])}, {percent(ci[1])}]" if ci else "")


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(summary: dict, charts: dict[str, bytes]) -> str:
    m = summary["metrics"]
    parts = page_start(summary, "codemill eval report", "codemill eval: HumanEval-X", "toolchain fingerprint")
    gen = m.get("generation") or {}
    if gen.get("languages"):
        ks = list(next(iter(gen["languages"].values()))["pass_at_k"])
        rows = []
        for lang, lm in gen["languages"].items():
            cells = [percent_with_ci(lm["pass_at_k"][k]["value"], lm["pass_at_k"][k]["ci95"]) for k in ks]
            rows.append([lang, str(lm["problems"]), str(lm["samples"]), *cells])
        rows.append(["average", "", "", *[percent(gen["average"][k]) for k in ks]])
        parts += ["<h2>Generation: pass@k (%)</h2>",
                  html_table(["language", "problems", "samples", *[f"pass@{k} [95% CI]" for k in ks]], rows)]
    if "pass_at_k" in charts:
        parts.append(html_image(charts["pass_at_k"], "pass@k per language"))
    solved = [[lang, str(len(lm.get("solved", []))), ", ".join(f"{p['task_id']} ({p['c']}/{p['n']})"
                                                             for p in lm.get("solved", [])) or "none"]
              for lang, lm in (gen.get("languages") or {}).items()]
    if solved:
        parts += ["<h2>Problems solved by at least one sample (passing samples / samples)</h2>",
                  html_table(["language", "problems", "which"], solved)]
    if m.get("allocation"):
        rows = [[a["strategy"], str(a["k"]), ", ".join(f"{k} {v}" for k, v in a["budget"].items()),
                 percent(a["value"]), str(a["problems"])] for a in m["allocation"]]
        parts += ["<h2>Budget allocation over languages: pass@k<sub>π</sub> (%)</h2>",
                  html_table(["strategy", "k", "budget", "pass@k_π", "problems"], rows)]
    if m.get("outcomes"):
        rows = [[lang, *[str(d.get(o, 0)) for o in OUTCOMES]] for lang, d in m["outcomes"].items()]
        parts += ["<h2>Outcomes</h2>", html_table(["language", *OUTCOMES], rows)]
    if "outcomes" in charts:
        parts.append(html_image(charts["outcomes"], "outcome distribution"))
    tr = m.get("translation") or {}
    if tr.get("matrix"):
        rows = [[s, *[f"{t}: {percent(v)}" for t, v in row.items()]] for s, row in tr["matrix"].items()]
        parts += [f"<h2>Translation: pass@{tr['k']} (%)</h2>", html_table(["source", "targets"], rows)]
    if "translation" in charts:
        parts.append(html_image(charts["translation"], "translation heatmap"))
    parts += weak_tests_section(summary)
    tools = summary.get("toolchains") or {}
    if tools:
        parts += ["<h2>Toolchains</h2>", html_table(["tool", "version"], [[k, str(v)] for k, v in tools.items()])]
    parts.append("</body></html>")
    return "".join(parts)


def weak_tests_section(summary: dict) -> list[str]:
    """The scored units whose tests accepted a wrong answer in the benchmark check, with the answers."""
    weak = summary.get("weak_tests") or []
    if not weak:
        return []
    rows = [[w["task_id"], f"{len(w['accepted'])} of {w['wrong_answers_tried']}",
             "; ".join(a["kind"] for a in w["accepted"])] for w in weak]
    return ["<h2>Tests that accept a wrong answer</h2>",
            "<p>In the benchmark check these tasks' tests passed a deliberately wrong answer (a mutant of the "
            "canonical solution, or a constant return). Their pass rates may overstate; a surviving mutant can "
            "also be equivalent to the original: read it.</p>",
            html_table(["task", "accepted", "wrong answers that passed"], rows)]


def page_start(summary: dict, title: str, heading: str, fingerprint_label: str) -> list[str]:
    """The page's head and style, its heading, the benchmark-check warning and the run's provenance line."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
             "body{font-family:sans-serif;margin:24px;background:#fff;color:#222}table{border-collapse:collapse;"
             "margin:8px 0 24px}td,th{border:1px solid #bbb;padding:4px 10px;text-align:right}"
             "th{background:#eee}img{max-width:100%;display:block;margin:8px 0 24px}.warn{color:#b00;font-weight:bold}",
             f"</style></head><body><h1>{html.escape(heading)}</h1>"]
    check = summary.get("benchmark_check") or {}
    if not check.get("passed"):
        parts.append(f"<p class='warn'>Scored without a passing benchmark check: "
                     f"{html.escape(str(check.get('why_not')))}</p>")
    parts.append(f"<p>{summary.get('samples', 0)} samples; {fingerprint_label} "
                 f"{html.escape(str(summary.get('fingerprint')))}; sandbox "
                 f"{html.escape(str((summary.get('sandbox') or {}).get('sandbox')))}.</p>")
    if summary.get("infrastructure_errors"):
        parts.append(f"<p class='warn'>{summary['infrastructure_errors']} sample(s) were not executed (their "
                     "executions were lost): not scored; run the stage again to execute them.</p>")
    return parts


def html_image(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def write_report(out: str, summary: dict) -> dict[str, str]:
    """charts/*.png and report.html under `out`; returns what was written."""
    m = summary["metrics"]
    return write_pages(out, {"pass_at_k": pass_at_k_chart(m), "outcomes": outcome_chart(m),
                             "translation": translation_chart(m)}, lambda charts: render_html(summary, charts))


def write_pages(out: str, charts: dict[str, bytes | None], render) -> dict[str, str]:
    """The charts that exist as charts/<name>.png, then report.html from render(charts); returns the URIs."""
    charts = {name: png for name, png in charts.items() if png}
    written = {}
    for name, png in charts.items():
        uri = storage.join(out, EVAL_CHARTS, f"{name}.png")
        storage.write_bytes(uri, png)
        written[name] = uri
    report = storage.join(out, EVAL_REPORT)
    storage.write_bytes(report, render(charts).encode())
    written["report"] = report
    return written
