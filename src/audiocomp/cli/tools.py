"""Commands that inspect the environment, the registries, the config and datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import ConfigOpt, QuietOpt, RunsDirOpt, SetOpt, _config, app, config_app, data_app, guarded


@app.command()
@guarded
def models(feature_shape: Annotated[str, typer.Option(help="Input features as 1xFxT or S (waveform).")] = "1x64x101",
           classes: Annotated[int, typer.Option(help="Number of classes.")] = 10):
    """List the registered models with their parameter counts and MACs per item (conv, linear, recurrent).

    Example: `audiocomp models --feature-shape 1x128x431`
    """
    from ..evaluate.counts import parameter_counts
    from ..evaluate.facts import architecture_macs
    from ..models import MODELS, ModelSpec, build_model

    spec_shape = [int(v) for v in feature_shape.lower().split("x")]
    for model_name in MODELS.names():
        info = MODELS.get(model_name)
        shape = spec_shape if (len(spec_shape) == 3) == (info.input_kind == "spectrogram") else (
            [1, 64, 101] if info.input_kind == "spectrogram" else [16000])
        size = list(info.default_input_size) if info.default_input_size and len(shape) == 3 else None
        spec = ModelSpec(model_name, classes, shape, input_size=size)  # as `train` builds it
        n, macs = parameter_counts(build_model(spec))["parameters"], architecture_macs(spec)
        typer.echo(f"{model_name:20s} {info.input_kind:12s} {n:>12,} params {macs:>15,} MACs  {info.summary}")


@app.command()
@guarded
def doctor(runs_dir: RunsDirOpt = None):
    """Check the environment: versions against the pins, devices, quantized engines, ONNX Runtime
    providers, audio formats, free disk and write permission; exit code 0 when audiocomp can run.

    Example: `audiocomp doctor --runs-dir runs`
    """
    from ..runs import runs_root
    from ..stages import doctor as stage

    checks, usable = stage.run(runs_root(runs_dir))
    for c in checks:
        typer.echo(f"{c.status:5s} {c.name:22s} {c.detail}")
    typer.echo("usable: yes" if usable else "usable: NO (fix the 'fail' lines above)")
    if not usable:
        raise typer.Exit(1)


@config_app.command("show")
@guarded
def config_show(config: ConfigOpt = None, set_: SetOpt = None):
    """Print the fully resolved config (defaults, files, includes, --set) without running anything.

    Example: `audiocomp config show -c configs/demo-settings.yaml --set train.lr=0.001`
    """
    typer.echo(_config(config, set_).to_yaml(), nl=False)


@data_app.command("synth")
@guarded
def data_synth(out: Annotated[Path, typer.Option("--out", help="Folder to write (class folders + metadata.csv).")],
               per_class: Annotated[int, typer.Option(min=2, help="Clips per class.")] = 40,
               duration: Annotated[float, typer.Option(min=0.2, help="Clip length in seconds.")] = 1.5,
               seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
               quiet: QuietOpt = False):
    """Write a seeded synthetic audio set: 10 classes of generated sounds, mixed rates and formats.

    Example: `audiocomp data synth --out data/synth --per-class 40`
    """
    from ..datasets.synth import CLASSES, generate

    generate(out, per_class=per_class, duration=duration, seed=seed, progress=not quiet)
    typer.echo(f"wrote {per_class * len(CLASSES)} clips in {len(CLASSES)} classes to {out}")


@data_app.command("info")
@guarded
def data_info(config: ConfigOpt = None, set_: SetOpt = None,
              as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")] = False,
              quiet: QuietOpt = False):
    """Counts per class and fold, durations, sample rates and problems of the dataset in `data`.

    Example: `audiocomp data info -c configs/data/esc50.yaml --set data.root=/data/ESC-50`
    """
    import json

    from ..datasets import load_index
    from ..datasets.info import describe, format_info

    info = describe(load_index(_config(config, set_).data), progress=not (quiet or as_json))
    typer.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@data_app.command("fetch")
@guarded
def data_fetch(name: Annotated[str, typer.Argument(help="esc50, gtzan, urbansound8k or fsdd.")],
               dest: Annotated[Path, typer.Option("--dest", help="Folder to create: the dataset's data.root.")],
               source: Annotated[Optional[str], typer.Option("--source", help="URL, local archive (zip/tar.gz) or folder [default: the official URL].")] = None,
               quiet: QuietOpt = False):
    """Download (or unpack a local archive or folder), verify the layout, and place a dataset at DEST.

    Example: `audiocomp data fetch esc50 --dest data/ESC-50 --source ~/Downloads/ESC-50-master.zip`
    """
    from ..datasets.fetch import fetch

    r = fetch(name, dest, source, progress=not quiet)
    note = "" if r["items"] == r["official_items"] else f" (the official set has {r['official_items']})"
    typer.echo(f"{name}: {r['items']} clips, {r['classes']} classes verified{note}; "
               f"{len(r['problems'])} problems -> data.root: {r['root']}")
    for problem in r["problems"][:10]:
        typer.echo(f"  {problem}")
