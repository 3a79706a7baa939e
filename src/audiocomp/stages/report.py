"""`audiocomp report`: aggregate run directories into markdown, CSV and HTML pages with plots.

Reads metrics.json of train/prune/quantize (rows), eval (test metrics, model facts, confusion matrices) and
bench runs (latency, memory); adds the published numbers, labelled as the studies' own."""
from __future__ import annotations

import html
from pathlib import Path

from ..config import Config
from ..report.papers import PUBLISHED_COLUMNS, load_papers, match, published_rows
from ..report.tables import STUDY_COLUMNS, fmt_value, discover, markdown, model_rows, to_csv
from ..runs import atomic_copy, atomic_write_text


def collect_plots(runs, rows: list[dict], out: Path) -> list[tuple[str, str]]:
    """(caption, file name inside `out`) of every plot: trade-offs, bars, and copies of run plots."""
    from ..report.plots import method_bars, tradeoff_plot

    made = []
    for key, label, fname, log in (("size_mb", "model size (MB)", "accuracy_vs_size.png", True),
                                   ("latency_ms", "latency (ms, batch 1, 1 thread)", "accuracy_vs_latency.png", True),
                                   ("macs", "MACs", "accuracy_vs_macs.png", True)):
        if tradeoff_plot(rows, key, label, out / fname, y_key="test_accuracy", log_x=log):
            made.append((f"Test accuracy vs {label}; Pareto front in red", fname))
    if method_bars(rows, out / "methods.png", metrics=(("test_accuracy", "test accuracy"), ("size_mb", "size (MB)"),
                                                       ("latency_ms", "latency (ms)"))):
        made.append(("Per-method comparison", "methods.png"))
    for r in runs:
        for src, caption in ((r.path / "curves.png", f"Training curves of {r.name}"),
                             (r.path / "confusion.png", f"Confusion matrix of {r.name}")):
            if r.status == "done" and src.is_file():
                dest = f"{r.name}-{src.name}"
                atomic_copy(src, out / dest)
                made.append((caption, dest))
    return made


def html_table(rows: list[dict], columns) -> str:
    cols = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt_value(r.get(k), f))}</td>" for k, _, f in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, summary: str, rows: list[dict], published: list[dict], plots: list[tuple[str, str]]) -> str:
    figs = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
                   f"</figcaption></figure>" for c, f in plots)
    pub = (f"<h2>Published numbers (theirs, not measured here)</h2>{html_table(published, PUBLISHED_COLUMNS)}"
           if published else "")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}img{max-width:100%}figure{display:inline-block;margin:1em;vertical-align:top}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}"
            f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
            f"{html_table(rows, STUDY_COLUMNS)}{pub}<h2>Plots</h2>{figs}</body></html>\n")


def run(cfg: Config, sources: list[str | Path], out: Path) -> dict:
    runs = discover(sources)
    rows = model_rows(runs)
    studies = load_papers(cfg.report.papers)
    for row in rows:
        row["published"] = match(row, studies)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = collect_plots(runs, rows, out) if cfg.report.plots else []
    summary = (f"{len(rows)} model runs from {len(runs)} run directories. Every number in the first table is measured "
               "by audiocomp on this machine; 'Published (theirs)' and the last table are the studies' own figures.")
    published = published_rows(studies)
    lines = [f"# {cfg.report.title}", "", summary, "", markdown(rows, STUDY_COLUMNS)]
    if published:
        lines += ["## Published numbers (theirs, not measured here)", "", markdown(published, PUBLISHED_COLUMNS)]
    if plots:
        lines += ["## Plots", ""] + [f"![{c}]({f})\n" for c, f in plots]
    written = {}
    if "md" in cfg.report.formats:
        atomic_write_text(out / "report.md", "\n".join(lines))
        written["markdown"] = str(out / "report.md")
    if "csv" in cfg.report.formats:
        atomic_write_text(out / "report.csv", to_csv(rows))
        written["csv"] = str(out / "report.csv")
    if "html" in cfg.report.formats:
        atomic_write_text(out / "report.html", html_page(cfg.report.title, summary, rows, published, plots))
        written["html"] = str(out / "report.html")
    return {"rows": rows, "files": written, "plots": [f for _, f in plots]}
