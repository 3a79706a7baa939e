"""`audiocomp report`: aggregate run directories into markdown, CSV and HTML pages with plots.

Reads metrics.json of train/prune/quantize (rows), eval (test metrics, model facts, predictions, confusion
matrices) and bench runs (latency and memory per runtime); recomputes every accuracy interval and paired
difference from the saved predictions; adds the published numbers that `report.published` maps to our rows,
labelled as the studies' own. Rows are named by the stage ids of a pipeline (its `pipeline.json`, or the
names its report stage passes) and by run names otherwise."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Optional

from ..config import Config
from ..report.compare import add_comparisons
from ..report.papers import PUBLISHED_COLUMNS, check_mapping, load_papers, published_for, published_rows
from ..report.tables import RUNTIMES, discover, html_table, markdown, model_rows, to_csv
from ..runs import Run, RunError, atomic_copy, atomic_write_text, read_json

LATENCY_LABEL = "latency (ms), {}, 1 thread, batch 1"


def resolve_sources(sources: list[str | Path]) -> tuple[list[Run], dict[str, str]]:
    """The runs to report and the row names (run name -> stage id) of any pipeline output folder among
    `sources` (a folder holding `pipeline.json`: its stages' runs, named by their ids)."""
    plain, names, runs = [], {}, []
    for src in map(Path, sources):
        if not (src / "pipeline.json").is_file():
            plain.append(src)
            continue
        info = read_json(src / "pipeline.json")
        runs_dir = Path(info["runs_dir"])
        made = [s for s in info.get("stages", []) if s.get("run") and (runs_dir / s["run"] / "manifest.json").is_file()]
        for stage in made:
            runs.append(Run(runs_dir / stage["run"]))
            names.setdefault(stage["run"], stage["id"])
        if not made:
            raise RunError(f"{src / 'pipeline.json'}: none of its runs is in {runs_dir.resolve()} "
                           "(run the report from the folder the pipeline ran in)")
    seen = {r.path.resolve() for r in runs}
    return runs + [r for r in discover(plain) if r.path.resolve() not in seen], names


def report_setting(cfg: Config, runs: list[Run], key: str) -> dict:
    """report.<key> (a mapping of row names) of this report's config; without one, the mappings the runs were
    made with, merged (a paper pipeline's settings travel in every run's config.yaml)."""
    if getattr(cfg.report, key):
        return dict(getattr(cfg.report, key))
    merged: dict = {}
    for r in runs:
        merged.update((r.config_dict().get("report") or {}).get(key) or {})
    return merged


def published_mapping(cfg: Config, runs: list[Run], studies: list[dict]) -> dict[str, Optional[str]]:
    """report.published (report_setting); taken from the runs, minus references the published-results file no
    longer has (a record of the past, not an error of this report)."""
    known = {r["ref"] for r in published_rows(studies)}
    mapping = report_setting(cfg, runs, "published")
    if cfg.report.published:
        return mapping
    return {name: ref for name, ref in mapping.items() if ref is None or ref in known}


def collect_plots(runs, rows: list[dict], out: Path) -> list[tuple[str, str]]:
    """(caption, file name inside `out`) of every plot: trade-offs (latency: one plot per runtime), bars,
    and copies of run plots."""
    from ..report.plots import method_bars, tradeoff_plot

    made = []
    costs = [("size_mb", "model size (MB)", "accuracy_vs_size.png"), ("macs", "MACs", "accuracy_vs_macs.png")]
    costs += [(f"latency_{rt}_ms", LATENCY_LABEL.format(label), f"accuracy_vs_latency_{rt}.png") for rt, label in RUNTIMES]
    for key, label, fname in costs:
        if tradeoff_plot(rows, key, label, out / fname, y_key="test_accuracy", log_x=True):
            made.append((f"Test accuracy (95% CI) vs {label}; Pareto front in red", fname))
    bars = [("test_accuracy", "test accuracy"), ("size_mb", "size (MB)")]
    bars += [(f"latency_{rt}_ms", f"{label} latency (ms)") for rt, label in RUNTIMES]
    if method_bars(rows, out / "methods.png", metrics=bars):
        made.append(("Per-method comparison", "methods.png"))
    for r in runs:
        for src, caption in ((r.path / "curves.png", f"Training curves of {r.name}"),
                             (r.path / "confusion.png", f"Confusion matrix of {r.name}"),
                             (r.path / "front-size.png", f"Compress front of {r.name}: validation accuracy vs "
                                                         "file size, every rung (FP32 and INT8); front.md in the run")):
            if r.status == "done" and src.is_file():
                dest = f"{r.name}-{src.name}"
                atomic_copy(src, out / dest)
                made.append((caption, dest))
    return made


def notes(rows: list[dict], cfg: Config, baseline: Optional[str]) -> list[str]:
    """What the table's intervals, comparisons and labels mean, as sentences under it."""
    ic, out = cfg.eval.interval, []
    if any(r.get(f"{p}_accuracy_low") is not None for r in rows for p in ("val", "test")):
        out.append(f"Accuracies carry {ic.level:.0%} percentile-bootstrap intervals ({ic.n_boot} resamples, seed "
                   f"{ic.seed}) recomputed from each run's per-item predictions; none where a run saved none.")
    grouped = [r["run"] for r in rows if r.get("resampled") == "groups"]
    if grouped:
        out.append("Test items that share a group (segments of one clip, slices of one recording) are resampled "
                   f"as whole groups for: {', '.join(grouped)}.")
    if any(r.get("vs") for r in rows):
        ref = (f"the row {baseline}" if baseline else
               "the row in 'Compared with' (the model it was compressed from, or the row report.compare pairs it with)")
        out.append(f"'Test accuracy difference' is this row minus {ref} on the same test items, "
                   "with a paired bootstrap interval; McNemar's exact test assumes independent items, so read it "
                   "beside the interval, not instead of it.")
    last = [r["run"] for r in rows if str(r.get("chosen_on") or "").startswith("last epoch")]
    if last:
        out.append(f"No validation choice was made for {', '.join(last)}: the model is the last epoch's "
                   "(the split has no validation part).")
    if any(r.get(f"latency_{rt}_ms") is not None for r in rows for rt, _ in RUNTIMES):
        out.append("Latency is measured per runtime (torch eager, ONNX Runtime) with 1 thread at batch 1; '-' where "
                   "that runtime cannot run the model (torch INT8 runs only in torch, ONNX Runtime INT8 only "
                   "there) or no bench run measured it.")
    return out


def html_page(title: str, summary: str, rows: list[dict], notes_: list[str], published: list[dict],
              plots: list[tuple[str, str]]) -> str:
    figs = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
                   f"</figcaption></figure>" for c, f in plots)
    pub = (f"<h2>Published numbers (theirs, not measured here)</h2>{html_table(published, PUBLISHED_COLUMNS)}"
           if published else "")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}img{max-width:100%}figure{display:inline-block;margin:1em;vertical-align:top}")
    note_html = "".join(f"<p><small>{html.escape(n)}</small></p>" for n in notes_)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}"
            f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"
            f"{html_table(rows)}{note_html}{pub}<h2>Plots</h2>{figs}</body></html>\n")


def run(cfg: Config, sources: list[str | Path], out: Path, *, names: Optional[dict[str, str]] = None,
        baseline: Optional[str] = None) -> dict:
    """Write the report of `sources` into `out`. `names` (run name -> stage id) names rows, over any a
    pipeline.json gives; `baseline` (a row name) compares every row with that row instead of its parent."""
    runs, found = resolve_sources(sources)
    rows = model_rows(runs, {**found, **(names or {})})
    studies = load_papers(cfg.report.papers)
    mapped = check_mapping(published_mapping(cfg, runs, studies), studies)
    for row in rows:
        row["published"] = published_for(row, mapped)
    add_comparisons(rows, cfg.eval.interval, baseline, report_setting(cfg, runs, "compare"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = collect_plots(runs, rows, out) if cfg.report.plots else []
    summary = (f"{len(rows)} model runs from {len(runs)} run directories. Every number in the first table is measured "
               "by audiocomp on this machine; 'Published (theirs)' and the last table are the studies' own figures.")
    published = published_rows(studies)
    notes_ = notes(rows, cfg, baseline)
    lines = [f"# {cfg.report.title}", "", summary, "", markdown(rows), *(f"{n}\n" for n in notes_)]
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
        atomic_write_text(out / "report.html", html_page(cfg.report.title, summary, rows, notes_, published, plots))
        written["html"] = str(out / "report.html")
    return {"rows": rows, "files": written, "plots": [f for _, f in plots]}
