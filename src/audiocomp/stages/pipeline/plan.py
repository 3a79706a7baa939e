"""Planning a pipeline: every stage's resolved config and run name, without doing any work."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ...config import Config, ConfigError, load_config
from ..context import find_done
from ..naming import run_name
from ..registry import STAGES
from .schema import PipelineSpec, StageSpec, load_pipeline


@dataclass
class Step:
    spec: StageSpec
    cfg: Config
    name: Optional[str]  # run name (None for report)
    parents: list["Step"] = field(default_factory=list)

    @property
    def stage(self) -> str:
        return self.spec.stage


def split_overrides(overrides: list[str], ids: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`ID:section.key=value` applies to one stage; plain `section.key=value` to all."""
    common, scoped = [], {}
    for expr in overrides:
        head = expr.split("=", 1)[0]
        if ":" in head:
            sid, rest = expr.split(":", 1)
            if sid not in ids:
                raise ConfigError(f"--set {expr!r}: no stage with id '{sid}' (ids: {', '.join(sorted(ids))})")
            scoped.setdefault(sid, []).append(rest)
        else:
            common.append(expr)
    return common, scoped


def ancestors(steps: list[Step]) -> list[Step]:
    """The run-making steps among `steps` and everything upstream of them."""
    seen: dict[str, Step] = {}
    stack = list(steps)
    while stack:
        s = stack.pop()
        if s.spec.id not in seen and s.name is not None:
            seen[s.spec.id] = s
            stack.extend(s.parents)
    return list(seen.values())


def _resolve(st: StageSpec, spec: PipelineSpec, here: Path, extra: list[Path], common: list[str],
             scoped: list[str], parent: Optional[Step]) -> Config:
    """A first stage gets the pipeline's files and sets; a later one starts from its parent's resolved config
    (as `audiocomp eval --from RUN` does) plus its own. Command-line sets win at every level."""
    own = [here / f for f in st.config]
    if parent is None or st.stage == "report":
        return load_config([*(here / f for f in spec.base), *extra, *own], [*spec.set, *st.set, *common, *scoped])
    return load_config(own, [*st.set, *common, *scoped], base=parent.cfg.to_dict())


def _check_names(st: StageSpec, cfg: Config, path: Path) -> None:
    """Registered names are checked here so a typo fails before any stage has run, not an hour in."""
    from ...datasets import ADAPTERS
    from ...models import MODELS

    checks = {"prepare": ("data.dataset", cfg.data.dataset, ADAPTERS), "train": ("model.name", cfg.model.name, MODELS)}
    if st.stage in checks:
        key, value, registry = checks[st.stage]
        if value not in registry:
            raise ConfigError(f"{path}: stage '{st.id}': {key}: unknown {registry.kind} {value!r} "
                              f"(known: {', '.join(registry.names())})")


def plan(path: Path | str, overrides: list[str] = (), files: list[Path] = (), check: bool = True,
         until: Optional[str] = None) -> list[Step]:
    """Resolve every stage's config and run name without doing any work (validates everything).
    `files` are extra config files applied after the pipeline's `base` (e.g. a dataset for a sweep).
    `check=False` skips the checks that need the stage modules, datasets and models to be installed.
    `until`: only that stage and the stages it needs (a sweep's job for a run several combinations share)."""
    path = Path(path)
    spec = load_pipeline(path)
    for st in spec.stages if check else ():
        STAGES.get(st.stage).check_available()
    here = path.resolve().parent
    common, scoped = split_overrides(list(overrides), {s.id for s in spec.stages})
    steps: dict[str, Step] = {}
    for st in spec.stages:
        parents = [steps[p] for p in st.parents]
        try:
            cfg = _resolve(st, spec, here, [Path(f) for f in files], common, scoped.get(st.id, []),
                           parents[0] if parents else None)
        except ConfigError as exc:
            raise ConfigError(f"{path}: stage '{st.id}': {exc}") from None
        if check:
            _check_names(st, cfg, path)
        if st.stage == "report":  # a report covers the named stages and everything upstream of them
            parents = ancestors(parents) if parents else list(steps.values())
        name = run_name(st.stage, cfg, [p.name for p in parents]) if STAGES.get(st.stage).makes_run else None
        steps[st.id] = Step(st, cfg, name, parents)
    if until is not None:
        if until not in steps:
            raise ConfigError(f"{path}: --until {until}: no stage with that id (ids: {', '.join(steps)})")
        needed = {s.spec.id for s in ancestors(steps[until].parents)} | {until}
        return [s for s in steps.values() if s.spec.id in needed]
    return list(steps.values())


def describe(steps: list[Step], runs_dir: Optional[Path]) -> list[str]:
    """One line per step: what it would do (reuse or run) and under which run name."""
    lines, width = [], max((len(s.spec.id) for s in steps), default=0)
    for s in steps:
        if s.name is None:
            action, target = "render", "report"
        else:
            action = "reuse" if find_done(s.name, runs_dir) else "run"
            target = s.name
        src = ", ".join(p.spec.id for p in s.parents) or "-"
        lines.append(f"{s.spec.id:{width}s} {s.stage:9s} {action:6s} {target}  <- {src}")
    return lines
