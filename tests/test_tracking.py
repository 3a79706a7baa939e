"""tracking: MLflow and TensorBoard views of a run, read back through their own readers; never in a run name."""
import json
import sys
from pathlib import Path

import pytest

from audiocomp.config import load_config
from audiocomp.stages import pipeline
from audiocomp.stages.context import stage_run
from audiocomp.stages.naming import run_name
from audiocomp.tracking import TrackingWarning, artifact_files

TRACKED = ["tracking.mlflow=true", "tracking.tensorboard=true", "tracking.experiment=tiny"]


def test_tracking_settings_name_no_run(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - {id: data, stage: prepare}\n  - {id: fp32, stage: train, from: data}\n"
                    "  - {id: test, stage: eval, from: fp32}\n")
    names = lambda sets: [s.name for s in pipeline.plan(path, sets)]  # noqa: E731
    assert names(TRACKED + ["tracking.log_models=true"]) == names([])
    assert run_name("train", load_config([], TRACKED), ["p"]) == run_name("train", load_config(), ["p"])
    assert run_name("train", load_config([], ["train.lr=0.1"]), ["p"]) != run_name("train", load_config(), ["p"])


def stub_run(runs: Path, sets: list[str], name: str = "stub"):
    """A stage run without real work: a model file, a plot and metrics."""
    with stage_run("prune", load_config([], sets), name, runs) as run:
        (run / "model").mkdir()
        (run / "model" / "model.pt").write_bytes(b"weights")
        (run / "curves.png").write_bytes(b"png")
        run.write_metrics({"accuracy": 0.5, "nested": {"macs": 7}, "history": [1, 2], "method": "x"})
    return run


def test_a_tracking_failure_is_a_warning_not_a_failed_run(tmp_path, monkeypatch):
    with pytest.warns(TrackingWarning, match="tracking \\(mlflow\\): starting failed"):
        run = stub_run(tmp_path, ["tracking.mlflow=true", "tracking.mlflow_uri=nonsense://nowhere"])
    assert run.status == "done" and run.metrics()["accuracy"] == 0.5
    for module in ("mlflow", "mlflow.entities", "mlflow.tracking"):  # the extra is not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.warns(TrackingWarning, match=r"needs the mlflow extra: pip install 'audiocomp\[mlflow\]'"):
        run = stub_run(tmp_path, ["tracking.mlflow=true"], "stub2")
    assert run.status == "done"


def test_artifacts_are_plots_tables_and_records_not_models(tmp_path):
    for rel in ("curves.png", "metrics.json", "config.yaml", "folds/f1/curves.png", "report.md", "model/model.pt",
                "checkpoints/last.pt", "tensorboard/events.out", "logs/x.json", ".metrics.json.tmp", "store.npy"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in artifact_files(tmp_path)] == [
        "config.yaml", "curves.png", "folds/f1/curves.png", "metrics.json", "report.md"]


@pytest.fixture(scope="module")
def tracked(synth_root, tmp_path_factory):
    """A tiny 2-epoch training (and its prepare run) with both trackers on, plus a stub run that logs its model."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from audiocomp.stages import train

    runs = tmp_path_factory.mktemp("tracked")
    sets = [f"data.root={synth_root}", "data.dataset=synth", "features.sample_rate=8000", "features.duration=1.0",
            "features.n_fft=256", "features.hop_length=128", "features.n_mels=32", "features.workers=1",
            "model.name=cnn", "model.kwargs.channels=[8,16]", "train.epochs=2", "train.batch_size=16",
            "train.lr=0.003", "split.val_fraction=0.2", *TRACKED]
    run = train.run(load_config([], sets), runs, progress=False)
    stub = stub_run(runs, TRACKED + ["tracking.log_models=true"])
    return runs, run, stub


@pytest.mark.slow
def test_mlflow_holds_params_epochs_final_metrics_lineage_and_artifacts(tracked):
    from mlflow.tracking import MlflowClient

    runs, run, stub = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    found = {r.data.tags["audiocomp.run"]: r for r in client.search_runs([exp.experiment_id])}
    prepare_name = run.manifest["parents"][0]["name"]
    assert set(found) == {run.name, prepare_name, "stub"}
    mine = found[run.name]
    assert mine.info.status == "FINISHED" and mine.info.run_name == run.name
    assert mine.data.params["train.lr"] == "0.003" and mine.data.params["model.kwargs.channels"] == "[8, 16]"
    assert mine.data.params["seed"] == "0" and not any(k.startswith("tracking.") for k in mine.data.params)
    tags = mine.data.tags
    assert tags["audiocomp.stage"] == "train" and tags["audiocomp.parents"] == prepare_name
    assert tags["mlflow.parentRunId"] == found[prepare_name].info.run_id
    assert Path(tags["audiocomp.run_dir"]) == run.path.resolve()
    epochs = run.read_jsonl("metrics.jsonl")
    history = client.get_metric_history(mine.info.run_id, "epoch/val_accuracy")
    assert [(m.step, m.value) for m in history] == [(e["epoch"], e["val_accuracy"]) for e in epochs] and len(epochs) == 2
    final = run.metrics()
    assert mine.data.metrics["test_accuracy"] == final["test_accuracy"]
    assert mine.data.metrics["parameters"] == final["parameters"]
    artifacts = {a.path for a in client.list_artifacts(mine.info.run_id)}
    assert {"curves.png", "config.yaml", "metrics.json", "manifest.json"} <= artifacts and "model" not in artifacts
    # log_models: the model folder is copied; nested metrics are flattened
    stub_run_ = found["stub"]
    assert "model" in {a.path for a in client.list_artifacts(stub_run_.info.run_id)}
    assert stub_run_.data.metrics == {"accuracy": 0.5, "nested.macs": 7.0}


@pytest.mark.slow
def test_tensorboard_event_file_holds_epochs_and_final_metrics(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs, run, stub = tracked
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    epochs = run.read_jsonl("metrics.jsonl")
    loss = acc.Scalars("epoch/train_loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([e["train_loss"] for e in epochs], rel=1e-6)  # float32 in the file
    assert acc.Scalars("final/test_accuracy")[0].value == pytest.approx(run.metrics()["test_accuracy"], rel=1e-6)
    assert "config" in " ".join(acc.Tags()["tensors"])
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "done"
