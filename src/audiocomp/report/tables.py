"""Rows of the report table from run directories, rendered as markdown, CSV and HTML with the same columns."""
from __future__ import annotations

import csv
import html
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from ..evaluate.stats import format_difference
from ..models.io import artifact_path
from ..runs import Run

# runtimes with a latency column: (bench runtime key, label). Each row shows every runtime that can run it,
# so a plot or a column never mixes runtime effects with compression effects.
RUNTIMES = (("torch", "torch eager"), ("onnxruntime", "ONNX Runtime"))


def _interval_cell(key: str) -> Callable[[dict], str]:
    def cell(row: dict) -> str:
        value, low, high = row.get(key), row.get(f"{key}_low"), row.get(f"{key}_high")
        if value is None:
            return "-"
        return f"{value:.1%}" + ("" if low is None else f" [{low * 100:.1f}, {high * 100:.1f}]")
    return cell


def _diff_cell(row: dict) -> str:
    return format_difference({"diff": row.get("diff"), "low": row.get("diff_low"), "high": row.get("diff_high")})


@dataclass(frozen=True)
class Column:
    key: str  # the row value that decides whether the column is shown (and its CSV field)
    header: str  # markdown / HTML header
    fmt: Union[str, Callable[[dict], str]]  # a pattern for row[key], or a function of the whole row
    fields: tuple[str, ...] = ()  # CSV fields of this column (default: key); raw numbers, not text

    def cell(self, row: dict) -> str:
        return self.fmt(row) if callable(self.fmt) else fmt_value(row.get(self.key), self.fmt)

    @property
    def csv_fields(self) -> tuple[str, ...]:
        return self.fields or (self.key,)


# The studies' table layout (Model | Train accuracy | Validation accuracy | Model size) plus what we measure.
COLUMNS = [
    Column("run", "Model", "{}", ("run", "run_dir")),
    Column("model", "Architecture", "{}"),
    Column("method", "Compression", "{}"),
    Column("format", "Format", "{}"),
    Column("chosen_on", "Checkpoint chosen on", "{}"),
    Column("train_accuracy", "Train accuracy", "{:.1%}"),
    Column("val_accuracy", "Validation accuracy [95% CI]", _interval_cell("val_accuracy"),
           ("val_accuracy", "val_accuracy_low", "val_accuracy_high")),
    Column("test_accuracy", "Test accuracy [95% CI]", _interval_cell("test_accuracy"),
           ("test_accuracy", "test_accuracy_low", "test_accuracy_high", "resampled")),
    Column("test_macro_f1", "Test macro-F1", "{:.3f}"),
    Column("vs", "Compared with", "{}"),
    Column("diff", "Test accuracy difference [95% CI]", _diff_cell, ("diff", "diff_low", "diff_high")),
    Column("mcnemar_p", "McNemar p", "{:.3g}", ("mcnemar_p", "ref_only", "this_only")),
    Column("size_mb", "Model size (MB)", "{:.2f}"),
    Column("zipped_mb", "Zipped (MB)", "{:.2f}"),
    Column("parameters", "Params", "{:,}"),
    Column("nonzero", "Non-zero params", "{:,}"),
    Column("macs", "MACs", "{:,}"),
    *(Column(f"latency_{rt}_ms", f"{label}, 1 thread, batch 1 (ms)", "{:.2f}") for rt, label in RUNTIMES),
    *(Column(f"peak_rss_{rt}_mb", f"{label} fresh-process memory (MB)", "{:.0f}") for rt, label in RUNTIMES),
    Column("train_cpu_min", "Training CPU-minutes", "{:.1f}"),
    Column("train_samples_per_s", "Training samples/s", "{:.0f}"),
    Column("published", "Published (theirs)", "{}"),
]


def discover(paths: Iterable[str | Path]) -> list[Run]:
    """Runs named directly, or every run inside a folder of runs (a runs dir or a sweep)."""
    found: dict[Path, Run] = {}
    for p in map(Path, paths):
        if (p / "manifest.json").is_file():
            found[p.resolve()] = Run(p)
        elif p.is_dir():
            for child in sorted(p.iterdir()):
                if (child / "manifest.json").is_file():
                    found[child.resolve()] = Run(child)
        else:
            raise FileNotFoundError(f"{p}: not a run directory or a folder of runs")
    return list(found.values())


def latest_by_model_run(runs: list[Run], stage: str) -> dict[str, tuple[Run, dict]]:
    """(run, metrics.json) of the finished `stage` runs, keyed by the model run they measured; the most
    recently finished wins. Bench runs with a device profile (other thread counts) are left out."""
    done = sorted((r for r in runs if r.stage == stage and r.status == "done"),
                  key=lambda r: r.manifest.get("ended") or "")
    out: dict[str, tuple[Run, dict]] = {}
    for r in done:
        m = r.metrics()
        if not m.get("device_profile"):
            out[m.get("model_run", "")] = (r, m)
    return out


def _predictions(run: Run, metrics: dict, parts=("val", "test")) -> dict[str, Path]:
    """{part: predictions file} a train/prune/quantize/eval run recorded in its metrics."""
    return {part: run.path / rel for part, rel in (metrics.get("predictions") or {}).items()
            if part in parts and (run.path / rel).is_file()}


def _selection(run: Run, metrics: dict) -> Optional[str]:
    """How the model's checkpoint was chosen (train metrics `selection`), from the run or its training run."""
    if "selection" in metrics:
        return metrics["selection"]
    train = run.parent("train") if run.stage != "train" else None
    return train.metrics().get("selection") if train is not None else None


def training_cost(metrics: dict) -> dict:
    """What a training run cost (validation included): CPU-minutes of all threads, and the median training
    samples per wall second of its epochs; nothing for runs that record no training."""
    cost = {}
    if metrics.get("train_cpu_seconds") is not None:
        cost["train_cpu_min"] = metrics["train_cpu_seconds"] / 60
    rates = [e["samples_per_second"] for e in metrics.get("history") or [] if e.get("samples_per_second")]
    if rates:
        cost["train_samples_per_s"] = statistics.median(rates)
    return cost


def model_rows(runs: list[Run], names: Optional[dict[str, str]] = None) -> list[dict]:
    """One row per model run (any finished run holding a model/: train, prune, quantize), named by `names`
    (run name -> stage id) or by its run name; its latest finished eval run adds test metrics, model facts and
    the test predictions, its latest bench run the batch-1, 1-thread latency and fresh-process memory of each
    runtime in RUNTIMES."""
    names = names or {}
    evals = latest_by_model_run(runs, "eval")
    benches = latest_by_model_run(runs, "bench")
    rows = []
    for r in runs:
        if r.status != "done" or not (r.path / "model" / "arch.json").is_file():  # a model run, of any stage
            continue
        m = r.metrics()
        cfg = r.config_dict()
        parents = r.manifest.get("parents", [])
        row = {"run": names.get(r.name, r.name), "run_dir": r.name, "stage": r.stage,
               "parent_run": parents[0]["name"] if r.stage != "train" and parents else None,
               "model": cfg.get("model", {}).get("name"), "chosen_on": _selection(r, m),
               "method": m.get("method", "none" if r.stage == "train" else r.stage), "format": m.get("format", "fp32"),
               "predictions": _predictions(r, m)}
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1"):
            row[key] = m.get(key)
        row.update(training_cost(m))
        ev_run, ev = evals.get(r.name, (None, None))
        if ev:
            row["test_accuracy"] = ev.get("accuracy", row["test_accuracy"])
            row["test_macro_f1"] = ev.get("macro_f1", row["test_macro_f1"])
            row["predictions"].update(_predictions(ev_run, ev, parts=("test",)))  # the items of its accuracy
            facts = ev.get("model_facts", {})
            row.update({"parameters": facts.get("parameters"), "nonzero": facts.get("nonzero"),
                        "macs": facts.get("macs"), "format": facts.get("format", row["format"])})
            if facts.get("file_bytes") is not None:
                row["size_mb"] = facts["file_bytes"] / 1e6
                row["zipped_mb"] = facts["zipped_bytes"] / 1e6
        runtimes = benches.get(r.name, (None, {}))[1].get("runtimes", {})
        for rt, _ in RUNTIMES:  # None ("-") where the runtime cannot run this model or was not measured
            result = runtimes.get(rt, {})
            row[f"latency_{rt}_ms"] = result.get("threads", {}).get("1", {}).get("latency", {}).get("median_ms")
            row[f"peak_rss_{rt}_mb"] = result.get("fresh_process", {}).get("peak_rss_mb")
        data = cfg.get("data", {})
        row["dataset"] = data.get("corpus") or data.get("dataset")  # what the published numbers are matched on
        model_dir = r.path / "model"
        model_file = artifact_path(model_dir) if (model_dir / "arch.json").exists() else model_dir / "model.pt"
        if row.get("size_mb") is None and model_file.exists():
            row["size_mb"] = model_file.stat().st_size / 1e6
        rows.append(row)
    return rows


def fmt_value(value, pattern: str) -> str:
    if value is None:
        return "-"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def visible(rows: list[dict], columns: list[Column] = COLUMNS) -> list[Column]:
    """The columns with a value in at least one row: the same set in report.md, report.csv and report.html."""
    return [c for c in columns if any(r.get(c.key) is not None for r in rows)] or columns[:2]


def markdown(rows: list[dict], columns: list[Column] = COLUMNS) -> str:
    cols = visible(rows, columns)
    lines = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.cell(r) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def html_table(rows: list[dict], columns: list[Column] = COLUMNS) -> str:
    cols = visible(rows, columns)
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.cell(r))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def to_csv(rows: list[dict], columns: list[Column] = COLUMNS) -> str:
    """The visible columns, each as its raw fields (an interval column: value, low, high)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[f for c in visible(rows, columns) for f in c.csv_fields], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


CONSOLE_KEYS = ["run", "method", "format", "train_accuracy", "test_accuracy", "diff", "size_mb", "parameters",
                "nonzero", "macs", "latency_torch_ms", "latency_onnxruntime_ms"]


def terminal(rows: list[dict], keys: Optional[list[str]] = CONSOLE_KEYS) -> str:
    """A compact fixed-width table for the console."""
    cols = [c for c in visible(rows) if keys is None or c.key in keys]
    cells = [[c.header for c in cols]] + [[c.cell(r) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)
