"""Plots written as PNG files (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path: Path) -> Path:
    from ..runs import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def training_curves(history: list[dict], path: Path) -> Path | None:
    if not history:
        return None
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("train_loss", "val_loss"):
        if any(key in h for h in history):
            ax1.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key)
    for key in ("train_accuracy", "val_accuracy", "val_macro_f1", "val_map"):
        if any(key in h for h in history):
            ax2.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="score", title="accuracy", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_plot(cm, classes: list[str], path: Path, title: str = "confusion matrix") -> Path:
    cm = np.asarray(cm)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (smaller or equal x, larger or equal y, one strictly)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def tradeoff_plot(rows: list[dict], x_key: str, x_label: str, path: Path, y_key: str = "accuracy",
                  log_x: bool = False) -> Path | None:
    """Accuracy against a cost (size, latency); the Pareto front (cheaper and at least as accurate) is
    drawn as a line and its points are ringed. Rows with `<y_key>_low/_high` get their interval as a bar."""
    kept = [r for r in rows if r.get(x_key) is not None and r.get(y_key) is not None]
    pts = [(r[x_key], r[y_key], r["run"]) for r in kept]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    bars = [(r[x_key], r[y_key], r[f"{y_key}_low"], r[f"{y_key}_high"]) for r in kept
            if r.get(f"{y_key}_low") is not None]
    if bars:
        bx, by, lo, hi = (np.array(v) for v in zip(*bars))
        ax.errorbar(bx, by, yerr=[by - lo, hi - by], fmt="none", ecolor="tab:blue", alpha=0.5, capsize=3, zorder=2,
                    label="bootstrap interval")
    front = pareto_front(list(zip(xs, ys)))
    ax.plot([xs[i] for i in front], [ys[i] for i in front], color="tab:red", lw=1.5, zorder=2, label="Pareto front")
    ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=160, facecolors="none", edgecolors="tab:red", zorder=4)
    for x, y, name in pts:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=x_label, ylabel=y_key.replace("_", " "), title=f"{y_key.replace('_', ' ')} vs {x_label}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def method_bars(rows: list[dict], path: Path, metrics=(("accuracy", "accuracy"), ("size_mb", "size (MB)"),
                                                      ("latency_ms", "latency (ms)"))) -> Path | None:
    """One bar chart per metric, one bar per run (labelled by its compression method)."""
    metrics = [(k, label) for k, label in metrics if any(r.get(k) is not None for r in rows)]
    if not rows or not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    names = [f"{r['run']}\n({r.get('method') or '-'})" for r in rows]
    for ax, (key, label) in zip(axes[0], metrics):
        vals = [r.get(key) if r.get(key) is not None else 0 for r in rows]
        ax.bar(range(len(rows)), vals, color="tab:blue")
        ax.set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
        ax.set(title=label)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def sensitivity_plot(rows: list[dict], path: Path, title: str = "pruning sensitivity") -> Path:
    """Heat map: one row per prunable layer group, one column per ratio, colour = accuracy drop."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    ratios = sorted({float(r["ratio"]) for r in rows})
    drop = np.full((len(layers), len(ratios)), np.nan)
    for r in rows:
        drop[layers.index(r["layer"]), ratios.index(float(r["ratio"]))] = float(r["drop"])
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(ratios), 1.2 + 0.3 * len(layers)))
    image = ax.imshow(drop, cmap="Reds", vmin=min(0.0, np.nanmin(drop)), aspect="auto")
    ax.set_xticks(range(len(ratios)), [f"{r:.0%}" for r in ratios], fontsize=8)
    ax.set_yticks(range(len(layers)), layers, fontsize=7)
    if len(layers) * len(ratios) <= 200:
        for i in range(len(layers)):
            for j in range(len(ratios)):
                ax.text(j, i, f"{drop[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(image, ax=ax, label="accuracy drop")
    ax.set(xlabel="channels removed", ylabel="layer (coupled group)", title=title)
    return _save(fig, path)
