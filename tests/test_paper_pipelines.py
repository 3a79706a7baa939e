"""Smoke test: each paper pipeline runs end to end when made tiny with --set overrides, so its configs never rot.

The data is synthetic audio written in each dataset's official layout (ESC-50, GTZAN), read by that dataset's
own adapter. Stages whose module is not in this build yet are left out, with their descendants, and named in
the skip reason of `test_every_paper_stage_is_available`.
"""
import csv
from pathlib import Path

import pytest
import yaml

from audio_fixtures import synth_in_layout
from audiocomp.config import ConfigError
from audiocomp.runs import Run
from audiocomp.stages import pipeline
from audiocomp.stages.registry import MODEL_STAGES, STAGES

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"


def unavailable() -> set[str]:
    missing = set()
    for stage in STAGES.names():
        try:
            STAGES.get(stage).check_available()
        except ConfigError:
            missing.add(stage)
    return missing


def available_copy(src: Path, dest: Path) -> tuple[Path, set[str]]:
    """The pipeline with absolute config paths, minus the stages this build lacks (and what depends on them)."""
    data = yaml.safe_load(src.read_text())
    missing, dropped, kept = unavailable(), set(), []
    data["base"] = [str(src.parent / f) for f in data.get("base", [])]
    for st in data["stages"]:
        parents = [st["from"]] if isinstance(st.get("from"), str) else list(st.get("from") or [])
        if st["stage"] in missing or (parents and st["stage"] != "report" and set(parents) & dropped):
            dropped.add(st["id"])
            continue
        st["config"] = [str(src.parent / f) for f in st.get("config", [])]
        kept.append(st)
    data["stages"] = kept
    dest.write_text(yaml.safe_dump(data))
    return dest, dropped


def tiny(overrides: list[str], root: Path) -> list[str]:
    """The shared tiny settings on the dataset at `root`, minus the model choice (each paper stage picks its
    own model) and the dataset choice (each paper's own adapter reads its layout)."""
    keep = [s for s in overrides if not s.startswith(("model.", "data."))]
    return keep + [f"data.root={root}", "train.epochs=1"]


def report_rows(summary: dict) -> list[dict]:
    out = next(s["report"] for s in summary["stages"] if s["stage"] == "report")
    with open(Path(out) / "report.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_paper_stage_is_available():
    missing = unavailable()
    if missing:
        pytest.skip(f"stages not in this build yet, left out of the smoke runs: {', '.join(sorted(missing))}")


@pytest.mark.slow
def test_esc_urbansound_cnn_lstm_pipeline_runs_tiny(tmp_path, tiny_overrides):
    path, dropped = available_copy(PAPER / "esc-urbansound-cnn-lstm" / "pipeline.yaml", tmp_path / "p.yaml")
    root = synth_in_layout(tmp_path / "ESC-50", "esc50")
    sets = tiny(tiny_overrides, root) + ["cnn:model.kwargs.channels=[8,16]", "cnn-raw:model.kwargs.channels=[8,16]",
                                   "lstm:model.kwargs.hidden_size=16", "lstm-raw:model.kwargs.hidden_size=16"]
    summary = pipeline.run(path, sets, tmp_path / "runs", tmp_path / "out", progress=False, quiet=True)
    assert summary["status"] == "done"
    steps = {s["id"]: s for s in summary["stages"]}
    assert steps["mel"]["run"] != steps["raw"]["run"]  # mel and raw audio are two feature stores
    assert Run(tmp_path / "runs" / steps["mel"]["run"]).config().data.dataset == "esc50"
    models = {r["model"] for r in report_rows(summary)}
    assert {"cnn", "lstm", "cnn1d", "lstm_raw"} <= models
    published = {r["run"]: r["published"] for r in report_rows(summary)}
    assert published["cnn"] == "esc-us8k-cnn/cnn: 92.0%" and not published["cnn-taylor"] and not published["cnn-magnitude"]
    assert all(steps[i]["status"] in ("ran", "rendered") for i in steps)


@pytest.mark.slow
def test_gtzan_resnet_pipeline_runs_tiny(tmp_path, tiny_overrides):
    path, dropped = available_copy(PAPER / "gtzan-resnet152" / "pipeline.yaml", tmp_path / "p.yaml")
    root = synth_in_layout(tmp_path / "gtzan", "gtzan")
    # resnet18 stands in for resnet152 here: same builder and input handling, 1/5 of the bytes to write
    sets = [s for s in tiny(tiny_overrides, root) if not s.startswith("split.")] + [
        "model.name=resnet18", "model.input_size=[32,32]", "train.batch_size=32"]
    summary = pipeline.run(path, sets, tmp_path / "runs", tmp_path / "out", progress=False, quiet=True)
    rows = {r["run_dir"]: r for r in report_rows(summary)}
    steps = {s["id"]: s for s in summary["stages"]}
    assert {steps["baseline"]["run"], steps["modified"]["run"]} <= set(rows)
    by_id = {r["run"]: r for r in rows.values()}  # rows are named by stage id, with the published row mapped
    assert by_id["modified"]["published"] == "gtzan-resnet152/modified: 78.0%"
    assert not by_id["pruned-50"]["published"] and by_id["pruned-50"]["vs"] == "modified"
    assert steps["baseline"]["run"] != steps["modified"]["run"]
    assert Run(tmp_path / "runs" / steps["data"]["run"]).config().data.dataset == "gtzan"


@pytest.mark.parametrize("paper, study", [("gtzan-resnet152", "gtzan-resnet152"), ("esc-urbansound-cnn-lstm", "esc-us8k-cnn")])
def test_every_model_row_of_a_paper_pipeline_is_mapped_to_a_published_row_or_to_none(paper, study):
    """report.published names each of our model stages explicitly; every reference exists."""
    from audiocomp.report.papers import check_mapping, load_papers

    steps = pipeline.plan(PAPER / paper / "pipeline.yaml", check=False)
    report = next(s for s in steps if s.stage == "report")
    mapping = report.cfg.report.published
    models = {s.spec.id for s in steps if s.stage in MODEL_STAGES}
    assert set(mapping) == models  # every model row decided, nothing else named
    mapped = check_mapping(mapping, load_papers())  # raises on a reference that does not exist
    assert mapped and {m["study"] for m in mapped.values()} == {study}


def test_the_paper_mappings_name_the_right_published_rows():
    from audiocomp.report.papers import check_mapping, load_papers, published_for

    def published(paper: str, dataset: str) -> dict:
        steps = pipeline.plan(PAPER / paper / "pipeline.yaml", check=False)
        mapped = check_mapping(next(s for s in steps if s.stage == "report").cfg.report.published, load_papers())
        return {s.spec.id: published_for({"run": s.spec.id, "dataset": dataset}, mapped)
                for s in steps if s.stage in MODEL_STAGES}

    gtzan = published("gtzan-resnet152", "gtzan")
    assert gtzan["modified"] == "gtzan-resnet152/modified: 78.0%"  # not the baseline's 74%
    assert gtzan["baseline"] == "gtzan-resnet152/baseline: 74.0% / 256 MB"
    assert gtzan["int8"] == "gtzan-resnet152/static-int8: 6.0% / 60.1 MB"
    assert gtzan["pruned-50-int8"] is None and gtzan["pruned-50"] is None  # ours: no published counterpart
    esc = published("esc-urbansound-cnn-lstm", "esc50")
    assert esc["cnn"] == "esc-us8k-cnn/cnn: 92.0%" and esc["cnn-hybrid"] == "esc-us8k-cnn/hybrid-pruned: 89.0%"
    assert {k for k, v in esc.items() if v is not None} == {"cnn", "cnn-hybrid"}  # cnn-taylor, cnn-magnitude: none


OURS = {"ours-cnn", "ours-cnn-compressed", "ours-lstm", "ours-cnn-raw", "ours-lstm-raw"}


def test_ours_pipeline_is_labelled_ours_and_chooses_on_a_large_validation_part():
    """ours.yaml: our rows map to no published row while the faithful rows keep theirs (so a report of both
    pipelines sets the study's numbers beside the faithful rows only); >= 20% of the training folds validate."""
    from audiocomp.report.papers import check_mapping, load_papers, published_for

    steps = pipeline.plan(PAPER / "esc-urbansound-cnn-lstm" / "ours.yaml", check=False)
    assert {s.spec.id for s in steps if s.stage in MODEL_STAGES} == OURS | {"handset-cnn"}
    mapping = next(s for s in steps if s.stage == "report").cfg.report.published
    mapped = check_mapping(mapping, load_papers())
    assert all(published_for({"run": i, "dataset": "esc50"}, mapped) is None for i in OURS | {"handset-cnn"})
    assert published_for({"run": "cnn", "dataset": "esc50"}, mapped) == "esc-us8k-cnn/cnn: 92.0%"
    # a report of both pipelines pairs each of our rows with the faithful row of the same model and input
    faithful = pipeline.plan(PAPER / "esc-urbansound-cnn-lstm" / "pipeline.yaml", check=False)
    pairs = next(s for s in steps if s.stage == "report").cfg.report.compare
    by_id = {s.spec.id: s.cfg for s in steps} | {s.spec.id: s.cfg for s in faithful}
    assert set(pairs) == OURS - {"ours-cnn-compressed"}
    assert all((by_id[o].model.name, by_id[o].features.kind) == (by_id[f].model.name, by_id[f].features.kind)
               for o, f in pairs.items())
    assert all(s.cfg.split.val_fraction >= 0.2 for s in steps if s.stage != "report")
    cfg = {s.spec.id: s.cfg for s in steps}
    assert (cfg["ours-cnn"].train.optimizer, cfg["ours-cnn"].train.augment.mixup_alpha) == ("adamw", 0.2)
    assert cfg["ours-cnn-raw"].train.augment.gain_db > 0 and cfg["ours-lstm"].model.name == "lstm"
    assert cfg["ours-cnn-compressed"].compress.max_drop == 0.02 and cfg["ours-cnn-compressed"].distill.enabled
    assert cfg["ours-cnn-compressed"].compress.stop_at_miss and cfg["ours-cnn-compressed"].compress.sequential
    # compress's reference (ours-cnn) and its rungs keep their last epoch: validation judges them, picks no epoch
    assert (cfg["ours-cnn"].train.keep, cfg["ours-cnn-compressed"].compress.rung_epoch) == ("last", "last")


@pytest.mark.slow
def test_ours_pipeline_runs_tiny(tmp_path, tiny_overrides):
    path, dropped = available_copy(PAPER / "esc-urbansound-cnn-lstm" / "ours.yaml", tmp_path / "p.yaml")
    assert not dropped
    root = synth_in_layout(tmp_path / "ESC-50", "esc50")
    sets = tiny(tiny_overrides, root) + [
        "ours-cnn:model.kwargs.channels=[8,16]", "ours-cnn-compressed:model.kwargs.channels=[8,16]",
        "handset-cnn:model.kwargs.channels=[8,16]",
        "ours-cnn-raw:model.kwargs.channels=[8,16]", "ours-lstm:model.kwargs.hidden_size=16",
        "ours-lstm-raw:model.kwargs.hidden_size=16", "compress.methods=[structured]", "compress.ratios=[0.5]",
        "compress.finetune_epochs=1", "compress.latency_runs=3", "bench.iterations=3", "bench.warmup=1"]
    summary = pipeline.run(path, sets, tmp_path / "runs", tmp_path / "out", progress=False, quiet=True)
    assert summary["status"] == "done"
    rows = {r["run"]: r for r in report_rows(summary)}
    # no row has a published counterpart, so the report leaves the column out
    assert OURS <= set(rows) and not any(rows[i].get("published") for i in OURS)
    steps = {s["id"]: s for s in summary["stages"]}
    compressed = Run(tmp_path / "runs" / steps["ours-cnn-compressed"]["run"]).metrics()
    assert compressed["selection"].startswith("val:") and compressed["chosen"]["rung"]
    assert "test_drop" in compressed and compressed["vs_parent"]["test"]["low"] is not None
