"""A pipeline file's schema and graph: unknown keys, bad ids and impossible parents fail up front, in one line."""
from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...config import ConfigError, read_yaml
from ..registry import MODEL_STAGES, STAGES


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    stage: str
    from_: Union[str, list[str], None] = Field(None, alias="from")  # parent stage id(s)
    config: list[str] = Field(default_factory=list)  # extra config files for this stage only
    set: list[str] = Field(default_factory=list)  # overrides for this stage only

    @field_validator("stage")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in STAGES:
            raise ValueError(f"unknown stage {value!r} (known: {', '.join(STAGES.names())})")
        return value

    @property
    def parents(self) -> list[str]:
        return [self.from_] if isinstance(self.from_, str) else list(self.from_ or [])


class PipelineSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: list[str] = Field(default_factory=list)  # config files, relative to the pipeline (inherited downstream)
    set: list[str] = Field(default_factory=list)  # overrides (inherited downstream)
    stages: list[StageSpec] = Field(min_length=1)


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(top: type[BaseModel], loc: tuple) -> Optional[type[BaseModel]]:
    """The model that holds the key at `loc` (list indices skipped), for the allowed keys of an error."""
    model = top
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        kinds = [field.annotation, *typing.get_args(field.annotation)]
        model = next((k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)), None)
        if model is None:
            return None
    return model


def schema_error(exc: ValidationError, path: Path, top: type[BaseModel], item: type[BaseModel]) -> ConfigError:
    """The most useful error of a pipeline/sweep file as one line: unknown keys first, with a hint."""
    err = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _keys(_model_at(top, err["loc"][:-1]) or item)
        hint = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
        return ConfigError(f"{path}: {loc}: unknown key" + (f"; did you mean '{hint[0]}'?" if hint else "")
                           + f" (allowed: {', '.join(allowed)})")
    if err["type"] == "missing":
        return ConfigError(f"{path}: {loc}: required key missing")
    msg = err["msg"].removeprefix("Value error, ")
    return ConfigError(f"{path}: {loc}: {err.get('input')!r} is not valid: {msg}")


def check_graph(spec: PipelineSpec, path: Path) -> None:
    """Ids unique, parents named before use, parent kinds that the stage can read (registry.py)."""
    kinds: dict[str, str] = {}
    for i, st in enumerate(spec.stages):
        where = f"{path}: stages.{i} ({st.id})"
        if st.id in kinds:
            raise ConfigError(f"{where}: id '{st.id}' is used twice")
        d = STAGES.get(st.stage)
        allowed, parents = d.parents, st.parents
        if d.teacher and len(parents) == 2:  # its data, then the model run that teaches it
            teacher, parents = parents[1], parents[:1]
            if kinds.get(teacher) not in MODEL_STAGES:
                what = f"a {kinds[teacher]} stage" if teacher in kinds else "not an earlier stage id"
                raise ConfigError(f"{where}: from: the second parent of a {st.stage} stage is the model that "
                                  f"teaches it; '{teacher}' is {what}, not a {', '.join(MODEL_STAGES)} stage")
        for p in parents:
            if p not in kinds:
                raise ConfigError(f"{where}: from: '{p}' is not an earlier stage id "
                                  f"(earlier: {', '.join(kinds) or 'none'})")
            if allowed == ():
                raise ConfigError(f"{where}: a {st.stage} stage has no parent; remove 'from'")
            if allowed != ("*",) and kinds[p] not in allowed:
                if d.optional_parent:
                    raise ConfigError(f"{where}: a {st.stage} stage has no parent but a "
                                      f"{' or '.join(allowed)} stage; remove 'from' or name one")
                raise ConfigError(f"{where}: a {st.stage} stage cannot read a {kinds[p]} run "
                                  f"(it reads: {', '.join(allowed)})")
        if allowed not in ((), ("*",)) and len(parents) != 1 and not (d.optional_parent and not parents):
            also = " (then, optionally, the model stage that teaches it)" if d.teacher else ""
            raise ConfigError(f"{where}: a {st.stage} stage needs {'at most' if d.optional_parent else 'exactly'} "
                              f"one parent in 'from' (a {' or '.join(allowed)} stage id){also}")
        kinds[st.id] = st.stage


def load_pipeline(path: Path | str) -> PipelineSpec:
    path = Path(path)
    data = read_yaml(path)
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise schema_error(exc, path, PipelineSpec, StageSpec) from None
    check_graph(spec, path)
    return spec
