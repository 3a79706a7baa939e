"""Real data: the shipped UrbanSound8K subset config (`configs/data/urbansound8k-subset.yaml`, csv adapter)
through the study's settings: fold 10 is the test fold, the validation part is 20% of folds 1-3 drawn by
whole recordings, and the report sets the study's published UrbanSound8K number beside the faithful CNN's row
(`data.corpus`). One short training on all 2,985 clips: about 20 s on 2 cores."""
import csv
import json
from pathlib import Path

import pytest
import yaml

from audiocomp.config import load_config
from audiocomp.datasets.manifest import csv_dataset
from audiocomp.stages import pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PAPER = CONFIGS / "paper" / "esc-urbansound-cnn-lstm"
pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_subset_splits_by_fold_and_recording_and_reports_the_studys_number(tmp_path, us8k_subset_root):
    spec = {"base": [str(PAPER / "settings.yaml"), str(CONFIGS / "data" / "urbansound8k-subset.yaml")],
            "stages": [{"id": "mel", "stage": "prepare"},
                       {"id": "cnn", "stage": "train", "from": "mel", "config": [str(CONFIGS / "models" / "cnn.yaml")]},
                       {"id": "report", "stage": "report"}]}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    sets = [f"data.root={us8k_subset_root}", "features.n_mels=32", "model.kwargs.channels=[8,16]", "train.epochs=1"]
    summary = pipeline.run(path, sets, tmp_path / "runs", tmp_path / "out", progress=False, quiet=True)
    run_of = {s["id"]: s["run"] for s in summary["stages"]}

    split = json.loads((tmp_path / "runs" / run_of["mel"] / "splits.json").read_text())["splits"][0]
    items = csv_dataset(load_config([CONFIGS / "data" / "urbansound8k-subset.yaml"],
                                    [f"data.root={us8k_subset_root}"]).data).items
    parts = {p: [items[i] for i in split[p]] for p in ("train", "val", "test")}
    assert {it.fold for it in parts["test"]} == {10} and len(parts["test"]) == sum(it.fold == 10 for it in items)
    assert {it.fold for it in parts["train"] + parts["val"]} == {1, 2, 3}
    assert 0.15 < len(parts["val"]) / (len(parts["train"]) + len(parts["val"])) < 0.25
    groups = {p: {it.group for it in parts[p]} for p in parts}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])

    out = next(s["report"] for s in summary["stages"] if s["stage"] == "report")
    with open(Path(out) / "report.csv", newline="") as fh:
        rows = {r["run"]: r for r in csv.DictReader(fh)}
    assert rows["cnn"].get("published") == "esc-us8k-cnn/cnn: 92.0%"  # the subset is UrbanSound8K (data.corpus)
