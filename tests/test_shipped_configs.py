"""Every YAML file under configs/ validates: plain configs through load_config, pipelines and sweeps
through their schemas with every stage's config resolved."""
from pathlib import Path

import pytest
import yaml

from audiocomp.config import load_config
from audiocomp.stages import pipeline, sweep

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yaml"))


def kind(path: Path) -> str:
    data = yaml.safe_load(path.read_text()) or {}
    return "pipeline" if "stages" in data else "sweep" if "pipeline" in data else "config"


def test_the_expected_configs_ship():
    names = {p.relative_to(CONFIGS).as_posix() for p in FILES}
    for required in ["base.yaml", "demo.yaml", "data/esc50.yaml", "data/urbansound8k.yaml", "data/gtzan.yaml",
                     "data/audioset.yaml", "data/fsdd.yaml", "data/synth.yaml", "models/resnet152.yaml",
                     "models/cnn.yaml", "models/lstm.yaml", "models/cnn1d.yaml",
                     "paper/gtzan-resnet152/pipeline.yaml", "paper/esc-urbansound-cnn-lstm/pipeline.yaml",
                     "paper/esc-urbansound-cnn-lstm/sweep.yaml"]:
        assert required in names


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(CONFIGS).as_posix() for p in FILES])
def test_shipped_config_validates(path):
    what = kind(path)
    if what == "pipeline":
        steps = pipeline.plan(path, check=False)
        assert steps and all(s.name or s.stage == "report" for s in steps)
    elif what == "sweep":
        plan = sweep.load(path, check=False)
        assert plan.combos and all(c.steps for c in plan.combos)
    else:
        load_config([path])


def test_paper_settings_match_the_studies():
    gtzan = pipeline.plan(CONFIGS / "paper/gtzan-resnet152/pipeline.yaml", check=False)
    base = next(s for s in gtzan if s.spec.id == "baseline").cfg
    assert base.model.name == "resnet152" and tuple(base.model.input_size) == (299, 299)
    assert (base.features.sample_rate, base.features.kind, base.split.test_fraction) == (22050, "logmel", 0.2)
    assert (base.train.epochs, base.train.optimizer, base.train.lr) == (20, "adam", 1e-4)
    assert {s.cfg.quantize.method for s in gtzan if s.stage == "quantize"} == {"dynamic", "fp16", "static"}
    esc = pipeline.plan(CONFIGS / "paper/esc-urbansound-cnn-lstm/pipeline.yaml", check=False)
    assert {s.cfg.prune.method for s in esc if s.stage == "prune"} == {"magnitude", "taylor", "hybrid"}
    assert {s.cfg.model.name for s in esc if s.stage == "train"} == {"cnn", "lstm", "cnn1d", "lstm_raw"}
    assert {s.cfg.split.kind for s in esc} == {"folds"}  # the official folds
    raw = next(s for s in esc if s.spec.id == "cnn-raw").cfg
    assert raw.features.kind == "waveform"
