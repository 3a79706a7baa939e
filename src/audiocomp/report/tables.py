"""Rows of the report table from run directories, rendered as markdown and CSV."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Optional

from ..models.io import artifact_path
from ..runs import Run

MODEL_STAGES = ("train", "prune", "quantize")

# (key, header, format)
COLUMNS = [
    ("run", "Run", "{}"),
    ("model", "Model", "{}"),
    ("method", "Compression", "{}"),
    ("format", "Format", "{}"),
    ("train_accuracy", "Train acc", "{:.1%}"),
    ("val_accuracy", "Val acc", "{:.1%}"),
    ("test_accuracy", "Test acc", "{:.1%}"),
    ("test_macro_f1", "Test F1", "{:.3f}"),
    ("size_mb", "Size (MB)", "{:.2f}"),
    ("zipped_mb", "Zipped (MB)", "{:.2f}"),
    ("parameters", "Params", "{:,}"),
    ("nonzero", "Non-zero", "{:,}"),
    ("macs", "MACs", "{:,}"),
    ("latency_ms", "Latency (ms)", "{:.2f}"),
    ("latency_iqr_ms", "IQR (ms)", "{:.2f}"),
    ("runtime", "Runtime", "{}"),
    ("peak_rss_mb", "Peak RSS (MB)", "{:.0f}"),
    ("cold_start_s", "Cold start (s)", "{:.2f}"),
    ("published", "Published (theirs)", "{}"),
]

# The studies' own table layout: Model | Train accuracy | Validation accuracy | Model size, plus measured costs.
STUDY_COLUMNS = [
    ("run", "Model", "{}"),
    ("method", "Compression", "{}"),
    ("format", "Format", "{}"),
    ("train_accuracy", "Train accuracy", "{:.1%}"),
    ("val_accuracy", "Validation accuracy", "{:.1%}"),
    ("test_accuracy", "Test accuracy", "{:.1%}"),
    ("size_mb", "Model size (MB)", "{:.2f}"),
    ("macs", "MACs", "{:,}"),
    ("nonzero", "Non-zero params", "{:,}"),
    ("latency_ms", "Latency (ms)", "{:.2f}"),
    ("peak_rss_mb", "Memory (MB)", "{:.0f}"),
    ("published", "Published (theirs)", "{}"),
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


def latest_by_model_run(runs: list[Run], stage: str) -> dict[str, dict]:
    """metrics.json of the finished `stage` runs, keyed by the model run they measured; the most recently
    finished wins. Bench runs with a device profile (other thread counts) are left out of the table."""
    done = sorted((r for r in runs if r.stage == stage and r.status == "done"),
                  key=lambda r: r.manifest.get("ended") or "")
    out: dict[str, dict] = {}
    for r in done:
        m = r.metrics()
        if not m.get("device_profile"):
            out[m.get("model_run", "")] = m
    return out


def model_rows(runs: list[Run]) -> list[dict]:
    """One row per model run (train, prune, quantize); its latest finished eval run adds test metrics and
    model facts, its latest bench run the latency (fastest runtime at 1 thread) and fresh-process memory."""
    evals = latest_by_model_run(runs, "eval")
    benches = latest_by_model_run(runs, "bench")
    rows = []
    for r in runs:
        if r.stage not in MODEL_STAGES or r.status != "done":
            continue
        m = r.metrics()
        cfg = r.config_dict()
        row = {"run": r.name, "stage": r.stage, "model": cfg.get("model", {}).get("name"),
               "method": m.get("method", "none" if r.stage == "train" else r.stage), "format": m.get("format", "fp32")}
        for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_macro_f1"):
            row[key] = m.get(key)
        ev = evals.get(r.name)
        if ev:
            row["test_accuracy"] = ev.get("accuracy", row["test_accuracy"])
            row["test_macro_f1"] = ev.get("macro_f1", row["test_macro_f1"])
            facts = ev.get("model_facts", {})
            row.update({"parameters": facts.get("parameters"), "nonzero": facts.get("nonzero"),
                        "macs": facts.get("macs"), "format": facts.get("format", row["format"])})
            if facts.get("file_bytes") is not None:
                row["size_mb"] = facts["file_bytes"] / 1e6
                row["zipped_mb"] = facts["zipped_bytes"] / 1e6
        head = benches.get(r.name, {}).get("headline", {})
        row.update({k: head.get(k) for k in ("latency_ms", "latency_iqr_ms", "runtime", "peak_rss_mb", "cold_start_s")})
        row["dataset"] = cfg.get("data", {}).get("dataset")
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


def markdown(rows: list[dict], columns=COLUMNS) -> str:
    cols = [c for c in columns if any(r.get(c[0]) is not None for r in rows)] or columns[:2]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt_value(r.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict], columns=COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[k for k, _, _ in columns], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


CONSOLE_KEYS = ["run", "method", "format", "train_accuracy", "test_accuracy", "test_macro_f1", "size_mb", "zipped_mb",
                "parameters", "nonzero", "macs", "latency_ms"]


def terminal(rows: list[dict], keys: Optional[list[str]] = CONSOLE_KEYS) -> str:
    """A compact fixed-width table for the console."""
    cols = [c for c in COLUMNS if (keys is None or c[0] in keys) and any(r.get(c[0]) is not None for r in rows)]
    cells = [[h for _, h, _ in cols]] + [[fmt_value(r.get(k), f) for k, _, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells)
