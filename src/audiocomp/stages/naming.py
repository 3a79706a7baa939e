"""Run names: one rule for every stage, whether the command line or a pipeline runs it.

    <stage>-<model>-<hash of (stage, the config sections it reads, seed, parent run names)>

The sections are the stage's `sections` in registry.py; a parent's name carries everything upstream of it,
so an edit renames exactly the runs it can change and their descendants, and a finished run is found again
by its name (`audiocomp run` reuses it; `audiocomp train` run twice stops at the existing run). The data
stages say the dataset instead of the model; `prepare` keeps its own shorter form,
`prepare-<dataset>-<hash of data, features, split, seed (and its synth parent, if any)>`, so the prepare
runs made before this rule are found again. Settings that change no result never name a run: `tracking:`
(absent from every stage's sections) and the speed settings and labels in VOLATILE; a switched-off section
(SWITCHED: `distill` with `enabled: false`) names nothing either, nor does a setting added later while it is
off (ADDED). A training run is distilled exactly when it has a teacher, so `distill`'s alpha and temperature
name it only then.
"""
from __future__ import annotations

from typing import Sequence

from ..config import Config, stable_hash
from .registry import STAGES

# Settings that change how fast a stage runs, or only label its results, never what it computes: left out of
# run names.
VOLATILE = {("train", "threads"), ("features", "workers"), ("compress", "jobs"), ("data", "corpus")}
# Sections that change nothing while switched off (`enabled: false`): named only when on, so the runs made
# before they existed keep their names.
SWITCHED = ("distill",)
# Settings added after runs were named, with their off value: named only when set, for the same reason.
ADDED = {("train", "ema_decay"): None, ("train", "keep"): "best", ("train", "augment", "time_stretch"): 0.0,
         ("train", "augment", "freq_shift"): 0.0, ("train", "augment", "pitch_shift"): 0.0,
         ("compress", "stop_at_miss"): False}


def _sections(cfg: Config, sections: Sequence[str]) -> dict:
    data = cfg.to_dict()
    key = {s: data.get(s, {}) for s in sections}
    for section, k in VOLATILE:
        if isinstance(key.get(section), dict):
            key[section].pop(k, None)
    for (section, *inner, k), off in ADDED.items():
        d = key.get(section)
        for part in inner:
            d = d.get(part) if isinstance(d, dict) else None
        if isinstance(d, dict) and d.get(k, off) == off:
            d.pop(k, None)
    for section in SWITCHED:
        if section in key and not (key[section] or {}).get("enabled"):
            del key[section]
    return key


def prepare_name(cfg: Config, parents: Sequence[str] = ()) -> str:
    key = _sections(cfg, STAGES.get("prepare").sections) | {"seed": cfg.seed}
    if parents:  # a prepare run of generated data (synth) changes with what generated it
        key["parents"] = list(parents)
    return f"prepare-{cfg.data.dataset}-{stable_hash(key, 8)}"


def run_name(stage: str, cfg: Config, parents: Sequence[str] = ()) -> str:
    """The name of `stage`'s run for `cfg` with these parent run names (in order)."""
    if stage == "prepare":
        return prepare_name(cfg, parents)
    d = STAGES.get(stage)
    key = _sections(cfg, d.sections)
    if d.teacher:  # distill names a training run only when a teacher (its second parent) distils into it
        key.pop("distill", None)
        if len(parents) > 1:
            key["distill"] = {"alpha": cfg.distill.alpha, "temperature": cfg.distill.temperature}
    key.update(stage=stage, seed=cfg.seed, parents=list(parents))
    subject = cfg.data.dataset if d.subject == "dataset" else cfg.model.name
    return f"{stage}-{subject}-{stable_hash(key, 10)}"
