"""`audiocomp data info`: what a dataset holds (classes, folds, durations, rates) and what is wrong with it."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .base import DatasetIndex


def describe(index: DatasetIndex, progress: bool = True) -> dict:
    """Probe every file's header (no decoding) and count; unreadable files become problems."""
    import soundfile as sf
    from tqdm import tqdm

    durations, rates, channels, formats, problems = [], Counter(), Counter(), Counter(), list(index.problems)
    for it in tqdm(index.items, desc="info", unit="file", disable=not progress):
        path = index.abspath(it)
        try:
            info = sf.info(str(path))
        except Exception as exc:  # libsndfile's own message says what is wrong with the file
            problems.append(f"{path}: cannot decode audio ({str(exc).split(':')[-1].strip()})")
            continue
        if info.frames == 0:
            problems.append(f"{path}: no audio samples")
        durations.append(info.duration if it.end_s is None else it.end_s - it.start_s)
        rates[info.samplerate] += 1
        channels[info.channels] += 1
        formats[f"{info.format}/{info.subtype}"] += 1
    per_class = Counter()
    for it in index.items:
        for t in (it.target if isinstance(it.target, tuple) else (it.target,)):
            per_class[index.classes[t] if 0 <= t < len(index.classes) else str(t)] += 1
    d = np.array(durations) if durations else np.zeros(1)
    return {
        "root": str(index.root), "items": len(index.items), "classes": len(index.classes),
        "multilabel": index.multilabel, "per_class": dict(sorted(per_class.items())),
        "per_fold": {str(k): v for k, v in sorted(Counter(it.fold for it in index.items if it.fold is not None).items())},
        "groups": len({it.group for it in index.items if it.group is not None}),
        "duration_s": {"min": float(d.min()), "mean": float(d.mean()), "max": float(d.max()), "total": float(d.sum())},
        "sample_rates": dict(sorted(rates.items())), "channels": dict(sorted(channels.items())),
        "formats": dict(formats.most_common()), "problems": problems,
    }


def format_info(info: dict, max_problems: int = 20) -> str:
    d = info["duration_s"]
    lines = [f"{info['root']}: {info['items']} items, {info['classes']} classes"
             + (" (multi-label)" if info["multilabel"] else "") + (f", {info['groups']} groups" if info["groups"] else ""),
             f"durations: min {d['min']:.2f} s, mean {d['mean']:.2f} s, max {d['max']:.2f} s, total {d['total'] / 3600:.2f} h",
             "sample rates: " + ", ".join(f"{r} Hz x{n}" for r, n in info["sample_rates"].items()),
             "channels: " + ", ".join(f"{c} x{n}" for c, n in info["channels"].items()),
             "formats: " + ", ".join(f"{f} x{n}" for f, n in info["formats"].items())]
    if info["per_fold"]:
        lines.append("per fold: " + ", ".join(f"{f}: {n}" for f, n in info["per_fold"].items()))
    lines.append("per class:")
    lines += [f"  {name:30s} {n}" for name, n in info["per_class"].items()]
    problems = info["problems"]
    lines.append(f"problems: {len(problems)}" + ("" if problems else " (none)"))
    lines += [f"  {p}" for p in problems[:max_problems]]
    if len(problems) > max_problems:
        lines.append(f"  ... and {len(problems) - max_problems} more (--json for all)")
    return "\n".join(lines)
