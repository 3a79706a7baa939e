"""Loading a config: YAML files with `include:`, merged in order, then `--set key=value` overrides, validated
into Config; errors name the file (or --set) that set the bad key, the key path, the value and what is
allowed, in one line."""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .sections import Config


class ConfigError(ValueError):
    """A configuration problem; the message is one line meant for the user."""


class _Sources:
    """Remembers which file (or --set) last set each key path, so errors can name it."""

    def __init__(self) -> None:
        self.by_path: dict[tuple, str] = {}

    def record(self, data: Any, source: str, prefix: tuple = ()) -> None:
        if isinstance(data, dict):
            for key, value in data.items():
                self.by_path[prefix + (key,)] = source
                self.record(value, source, prefix + (key,))

    def lookup(self, path: tuple) -> str:
        while path:
            if path in self.by_path:
                return self.by_path[path]
            path = path[:-1]
        return "defaults"


def deep_merge(base: dict, override: dict) -> dict:
    """Later wins; nested mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got {type(data).__name__}")
    return data


def _load_file(path: Path, sources: _Sources, stack: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise ConfigError(f"{path}: include cycle: {chain}")
    data = read_yaml(path)
    includes = data.pop("include", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: include: must be a file name or a list of file names")
    merged: dict = {}
    for inc in includes:
        merged = deep_merge(merged, _load_file(path.parent / inc, sources, stack + (path,)))
    sources.record(data, str(path))
    return deep_merge(merged, data)


def parse_override(expr: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], value parsed as a YAML scalar or list)."""
    if "=" not in expr:
        raise ConfigError(f"--set {expr!r}: expected section.key=value")
    key, raw = expr.split("=", 1)
    parts = key.strip().split(".")
    if not all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts):
        raise ConfigError(f"--set {expr!r}: bad key path {key!r} (expected names joined by dots)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {expr!r}: value {raw!r} is not a valid YAML scalar or list") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str], sources: _Sources) -> dict:
    data = copy.deepcopy(data)
    for expr in overrides:
        parts, value = parse_override(expr)
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {expr!r}: {'.'.join(parts[:-1])} is not a section")
            node = child
        node[parts[-1]] = value
        sources.by_path[tuple(parts)] = "--set"
    return data


def _fields_at(path: tuple) -> list[str]:
    """Names allowed at a key path of Config (for did-you-mean)."""
    model: Any = Config
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}).keys())


def _describe(error: dict, sources: _Sources) -> str:
    loc = tuple(str(p) for p in error["loc"])
    source = sources.lookup(loc)
    key = ".".join(loc) or "(top level)"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        msg = f"{source}: {key}: unknown key"
        if hint:
            msg += f"; did you mean '{hint[0]}'?"
        return msg + (f" (allowed: {', '.join(allowed)})" if allowed else "")
    allowed = ""
    ctx = error.get("ctx") or {}
    if "expected" in ctx:
        allowed = f"; allowed: {ctx['expected']}"
    return f"{source}: {key}: {value!r} is not valid: {error['msg']}{allowed}"


def validate(data: dict, sources: Optional[_Sources] = None) -> Config:
    sources = sources or _Sources()
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], sources)) from None


def load_config(files: list[Path] | tuple = (), overrides: list[str] | tuple = (),
                base: Optional[dict] = None) -> Config:
    """Merge `base` (e.g. a run's own config), then each file in order, then `--set` overrides."""
    sources = _Sources()
    data: dict = {}
    if base:
        sources.record(base, "base config")
        data = copy.deepcopy(base)
    for f in files:
        data = deep_merge(data, _load_file(Path(f), sources))
    data = apply_overrides(data, list(overrides), sources)
    return validate(data, sources)
