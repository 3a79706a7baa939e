"""Run folders written before the stage registry and the one naming rule (commit dc9476e) stay usable: a
pipeline finds its old runs again by name, and report, eval, bench, quantize and `train --resume` read old
folders. The old code wrote the same files; its config.yaml lacks the sections and keys added since
(`synth:`, `export.torchscript`), which is how the folders below are aged."""
import json
import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import validate
from audiocomp.runs import Run
from audiocomp.stages.naming import run_name

FIXTURE = Path(__file__).parent / "fixtures" / "pre-house" / "config.yaml"


def test_pipeline_runs_named_by_the_old_code_keep_their_names():
    """The resolved config the old code wrote into a tiny prepare -> train -> eval pipeline's runs, and the
    names it gave them. A pipeline finds a finished run by its name; if this test fails, an edit renamed
    the runs users already have (they would be recomputed, not reused): keep the names, or say so."""
    cfg = validate(yaml.safe_load(FIXTURE.read_text()))
    assert run_name("prepare", cfg) == "prepare-synth-91ab2125"
    assert run_name("train", cfg, ["prepare-synth-91ab2125"]) == "train-cnn-4d7be875f3"
    assert run_name("eval", cfg, ["train-cnn-4d7be875f3"]) == "eval-cnn-a28fe7c490"
    # a setting added since names a run only when it is on
    averaged = cfg.model_copy(update={"train": cfg.train.model_copy(update={"ema_decay": 0.99})})
    assert run_name("train", averaged, ["prepare-synth-91ab2125"]) != "train-cnn-4d7be875f3"
    for key in ("time_stretch", "freq_shift"):  # nested in train.augment
        augment = cfg.train.augment.model_copy(update={key: 0.1})
        on = cfg.model_copy(update={"train": cfg.train.model_copy(update={"augment": augment})})
        assert run_name("train", on, ["prepare-synth-91ab2125"]) != "train-cnn-4d7be875f3"


def age(run: Path) -> None:
    """Make a run folder look as the old code wrote it: without the config keys added since."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg.pop("synth")
    cfg["export"].pop("torchscript")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def cli(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_old_run_folders_are_read_by_report_eval_bench_quantize_and_resume(trained_run, tmp_path):
    src_runs, model_run, _ = trained_run
    runs = tmp_path / "runs"
    shutil.copytree(src_runs, runs, ignore=shutil.ignore_patterns(".store"), symlinks=True)
    for folder in runs.iterdir():
        if (folder / "manifest.json").is_file():
            age(folder)
    old = Run(runs / model_run.name)
    manifest = json.loads((old / "manifest.json").read_text())
    for p in manifest["parents"]:  # the copy's parent: the prepare run beside it (its store is shared)
        p["path"] = str(runs / p["name"])
    (old / "manifest.json").write_text(json.dumps(manifest))

    cli("quantize", "--from", old.name, "--runs-dir", runs, "--name", "q", "--allow-degraded", "-q",
        "--set", "quantize.backend=onnxruntime", "--set", "quantize.method=dynamic", "--set", "quantize.latency_runs=2")
    for parent in (old.name, "q"):
        assert "test: accuracy" in cli("eval", "--from", parent, "--runs-dir", runs, "-q")
    cli("bench", "--from", "q", "--runs-dir", runs, "--threads", "1", "-q", "--set", "bench.iterations=3",
        "--set", "bench.fresh_process=false")
    cli("report", runs, "--out", tmp_path / "report", "-q")
    rows = (tmp_path / "report" / "report.csv").read_text()
    assert old.name in rows and "\nq," in rows

    # an interrupted old training run continues from its checkpoint
    assert (old / "checkpoints" / "last.pt").is_file()
    old.update_manifest(status="failed")
    epochs = len(old.read_jsonl("metrics.jsonl"))
    cli("train", "--resume", old.name, "--runs-dir", runs, "-q", "--set", f"train.epochs={epochs + 1}")
    assert old.status == "done" and len(old.read_jsonl("metrics.jsonl")) == epochs + 1
