"""The Typer app, its shared options, and the guard that turns user errors into one line and exit code 2."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Audio classification experiments under edge constraints: prepare, train, evaluate, report.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect configuration.")
data_app = typer.Typer(no_args_is_help=True, help="Dataset helpers: inspect, fetch, synthesize.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

ConfigOpt = Annotated[Optional[list[Path]], typer.Option("-c", "--config", help="YAML config file (repeatable; later files win).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a key: section.key=value (YAML value; repeatable).")]
RunsDirOpt = Annotated[Optional[Path], typer.Option("--runs-dir", envvar="AUDIOCOMP_RUNS", help="Where run directories go [default: runs].")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="Run name [default: STAGE-MODEL-HASH of the settings it reads and its parents].")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing run of the same name.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars or tables.")]


def _user_errors() -> tuple[type[BaseException], ...]:
    from ..audio import AudioError
    from ..config import ConfigError
    from ..datasets.base import DatasetError
    from ..models.io import ModelLoadError
    from ..runs import RunError

    return ConfigError, RunError, DatasetError, AudioError, ModelLoadError, FileNotFoundError, PermissionError


def guarded(fn: Callable) -> Callable:
    """Turn expected user errors into one line on stderr and exit code 2 (1 for other failures)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, SystemExit):  # before _user_errors(), whose imports pull in torch
            raise
        except _user_errors() as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno in (28, 122, 30):  # ENOSPC, EDQUOT, EROFS: the user's disk, not a bug
                typer.echo(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror} "
                           f"(finished files are kept; free space or choose another --runs-dir, then re-run)", err=True)
                raise typer.Exit(2) from None
            raise
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
    return wrapper


def _config(config: Optional[list[Path]], overrides: Optional[list[str]], base: Optional[dict] = None):
    from ..config import load_config

    return load_config(config or [], overrides or [], base=base)


def _open_run(ref: str, runs_dir: Optional[Path]):
    from ..runs import Run

    return Run.open(ref, runs_dir)
