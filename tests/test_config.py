from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from audiocomp.config import Config, ConfigError, deep_merge, load_config, parse_override


def write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_defaults_follow_the_studies():
    cfg = Config()
    assert (cfg.features.sample_rate, cfg.features.n_fft, cfg.features.hop_length, cfg.features.n_mels) == (22050, 2048, 512, 128)
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == ("adam", 1e-4, 20, 32)
    assert cfg.split.test_fraction == 0.2


def test_later_files_win_key_by_key(tmp_path):
    a = write(tmp_path / "a.yaml", "train: {epochs: 3, lr: 0.01}\nmodel: {name: lstm}\n")
    b = write(tmp_path / "b.yaml", "train: {epochs: 5}\n")
    cfg = load_config([a, b])
    assert cfg.train.epochs == 5 and cfg.train.lr == 0.01 and cfg.model.name == "lstm"


def test_include_is_relative_to_the_including_file_and_overridden_by_it(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "base.yaml", "train: {epochs: 7, batch_size: 8}\n")
    top = write(tmp_path / "top.yaml", "include: [sub/base.yaml]\ntrain: {epochs: 9}\n")
    cfg = load_config([top])
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 8


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config([tmp_path / "a.yaml"])


def test_set_overrides_parse_yaml_values(tmp_path):
    cfg = load_config([], ["model.input_size=[299, 299]", "train.lr=1e-3", "train.channels_last=false",
                           "model.kwargs.channels=[8,16]", "split.test_fold=all"])
    assert cfg.model.input_size == (299, 299) and cfg.train.lr == 1e-3 and cfg.train.channels_last is False
    assert cfg.model.kwargs == {"channels": [8, 16]} and cfg.split.test_fold == "all"


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    f = write(tmp_path / "bad.yaml", "train:\n  optimiser: adam\n")
    with pytest.raises(ConfigError) as err:
        load_config([f])
    msg = str(err.value)
    assert str(f.resolve()) in msg and "train.optimiser" in msg and "did you mean 'optimizer'" in msg
    assert "\n" not in msg


def test_bad_value_names_the_allowed_values(tmp_path):
    f = write(tmp_path / "bad.yaml", "train: {optimizer: adagrad}\n")
    with pytest.raises(ConfigError) as err:
        load_config([f])
    msg = str(err.value)
    assert "train.optimizer" in msg and "'adagrad'" in msg and "'adam'" in msg


def test_bad_value_from_set_is_attributed_to_set():
    with pytest.raises(ConfigError, match=r"^--set: train.epochs: 'many'"):
        load_config([], ["train.epochs=many"])


@pytest.mark.parametrize("expr", ["train.epochs", "=3", "train..epochs=3", "train.epochs=[1,"])
def test_malformed_set_expressions(expr):
    with pytest.raises(ConfigError, match="--set"):
        load_config([], [expr])


def test_invalid_yaml_and_missing_file(tmp_path):
    f = write(tmp_path / "broken.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_config([f])
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])
    g = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config([g])


def test_yaml_is_loaded_safely(tmp_path):
    f = write(tmp_path / "evil.yaml", "seed: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config([f])


def test_section_hash_is_stable_and_sensitive():
    a, b = load_config([], ["train.lr=0.01"]), load_config([], ["train.lr=0.01"])
    c = load_config([], ["train.lr=0.02"])
    assert a.section_hash() == b.section_hash() != c.section_hash()
    assert a.section_hash("data") == c.section_hash("data")


def test_deep_merge_does_not_mutate_inputs():
    base = {"a": {"b": 1}}
    out = deep_merge(base, {"a": {"c": 2}})
    assert out == {"a": {"b": 1, "c": 2}} and base == {"a": {"b": 1}}


def test_parse_override_splits_on_first_equals():
    assert parse_override("report.title=a=b") == (["report", "title"], "a=b")


keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                      lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=4))
def test_fuzzed_configs_either_validate_or_raise_config_error(tmp_path_factory, doc):
    import yaml

    f = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    f.write_text(yaml.safe_dump(doc))
    try:
        load_config([f])
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_a_run_config_written_before_the_selection_keys_still_loads():
    """config.yaml of runs made before split.val_by, train.seeds and train.monitor: auto still validates."""
    from audiocomp.config import validate

    old = load_config([], []).to_dict()
    del old["split"]["val_by"], old["train"]["seeds"]
    old["train"]["monitor"] = "val_accuracy"  # the old default, written out explicitly
    cfg = validate(old)
    assert (cfg.split.val_by, cfg.train.seeds, cfg.train.monitor) == ("auto", 1, "val_accuracy")
    assert load_config([], []).train.monitor == "auto"
