"""Bad and odd audio: one-line errors naming the file, skipped and counted in prepare, never NaN features."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiocomp.audio import AudioError, decode, fix_length, load, load_fixed
from audiocomp.config import FeaturesConfig
from audiocomp.features import featurize as store  # the worker side of the store
from audiocomp.features.extract import FeatureExtractor, feature_shape

from .badaudio import CASES
from .conftest import assert_user_error, cli

FEATS = FeaturesConfig(sample_rate=8000, duration=1.0, n_fft=256, hop_length=128, n_mels=32, n_mfcc=20)


@pytest.fixture(scope="module")
def worker():
    store._init_worker(FEATS.model_dump())
    return store._featurize


@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_file_gives_one_line_naming_it_or_finite_features(tmp_path, worker, case):
    filename, make, expected = CASES[case]
    path = tmp_path / filename
    make(path)
    _, pieces, err = worker((0, str(path), 0.0, None, None))
    if expected == "error":
        assert err and str(path) in err and "\n" not in err and not pieces, err
    else:
        assert err is None and len(pieces) == 1
        assert pieces[0].dtype == np.float16 and pieces[0].shape == feature_shape(FEATS)
        assert np.isfinite(pieces[0]).all()


def test_silence_features_sit_on_the_log_floor_not_minus_inf():
    silent = np.zeros(8000, np.float32)
    for kind in ("logmel", "mfcc"):
        x = FeatureExtractor(FEATS.model_copy(update={"kind": kind}))(silent)
        assert np.isfinite(x).all()
    x = FeatureExtractor(FEATS)(silent)
    assert np.allclose(x, -100.0)  # 10*log10(amin=1e-10): librosa's floor


def test_long_file_decodes_only_the_window_it_keeps(tmp_path):
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_16") as fh:  # 15 minutes, written in 1 s blocks
        rng = np.random.default_rng(0)
        for _ in range(15 * 60):
            fh.write((rng.standard_normal(8000) * 3000).astype(np.int16))
    with pytest.raises(AudioError, match="limit"):
        decode(path)  # a full decode of 15 min is refused (600 s cap) ...
    tracemalloc.start()
    y = load_fixed(path, 16000, 16000, "crop-center")  # ... but a 1 s crop reads only ~1 s
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert y.shape == (16000,) and peak < 2_000_000, peak


@pytest.mark.parametrize("policy", ["crop-center", "crop-start", "pad"])
def test_windowed_load_matches_decoding_everything(tmp_path, policy):
    path = tmp_path / "x.wav"
    sf.write(str(path), np.random.default_rng(1).standard_normal(22050 * 7).astype(np.float32) * 0.1, 22050,
             subtype="FLOAT")
    expected = fix_length(load(path, 16000), 16000, policy)
    assert np.allclose(load_fixed(path, 16000, 16000, policy), expected, atol=1e-6)


# ----------------------------------------------------------------------------------- property based

EXTENSIONS = st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".aiff", ".au", ".bin"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=2048), ext=EXTENSIONS, riff=st.booleans())
def test_random_bytes_decode_cleanly_or_raise_one_line(tmp_path_factory, data, ext, riff):
    path = tmp_path_factory.mktemp("bytes") / f"x{ext}"
    path.write_bytes((b"RIFF\x00\x10\x00\x00WAVEfmt " if riff else b"") + data)
    try:
        y = load(path, 8000)
    except AudioError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
    else:
        assert y.ndim == 1 and np.isfinite(y).all()


odd_audio = st.fixed_dictionaries({
    "sr": st.sampled_from([1, 100, 4000, 8000, 11025, 44100, 96000, 192000]),
    "channels": st.integers(1, 8),
    "frames": st.integers(1, 6000),
    "scale": st.sampled_from([0.0, 1e-30, 1e-6, 0.5, 1.0, 100.0, 1e6]),
    "subtype": st.sampled_from(["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"]),
    "dc": st.booleans(),
    "kind": st.sampled_from(["logmel", "mfcc", "waveform"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=odd_audio, seed=st.integers(0, 2 ** 16))
def test_odd_but_valid_audio_gives_finite_features_or_an_error(tmp_path_factory, spec, seed):
    path = tmp_path_factory.mktemp("odd") / "x.wav"
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((spec["frames"], spec["channels"])) * spec["scale"] + (spec["scale"] if spec["dc"] else 0)
    sf.write(str(path), y.astype(np.float64), spec["sr"], subtype=spec["subtype"])
    cfg = FEATS.model_copy(update={"kind": spec["kind"]})
    store._init_worker(cfg.model_dump())
    _, pieces, err = store._featurize((0, str(path), 0.0, None, None))
    if err:
        assert str(path) in err and "\n" not in err
    else:
        assert pieces[0].shape == feature_shape(cfg) and np.isfinite(pieces[0]).all()


# ------------------------------------------------------------------------------ through `prepare`

@pytest.fixture
def bad_folder(tmp_path, synth_root):
    """A `folder` dataset: two good clips per class of two classes, plus every bad file in class 'a'."""
    root = tmp_path / "data"
    for ci, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for k in range(2):
            sf.write(str(root / cls / f"good{k}.wav"), 0.1 * np.sin(np.arange(8000) * (0.1 + ci + k)), 8000)
    for filename, make, _ in CASES.values():
        make(root / "a" / filename)
    return root


def test_prepare_skips_and_counts_every_bad_file(tmp_path, bad_folder, tiny_args):
    runs = tmp_path / "runs"
    result = cli("prepare", *tiny_args, "--set", "data.dataset=folder", "--set", f"data.root={bad_folder}",
                 "--set", "split.val_fraction=0", "--set", "split.test_fraction=0.25",
                 "--runs-dir", runs, "--name", "p", "-q")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    bad = sum(1 for *_, expected in CASES.values() if expected == "error")
    from audiocomp.runs import Run
    from audiocomp.features.prepared import load_prepared

    prepared = load_prepared(Run.open("p", runs))
    assert prepared.store.report["skipped"] == bad
    assert len(prepared.store.items) == 4 + len(CASES) - bad
    assert np.isfinite(np.asarray(prepared.store.features, np.float32)).all()


def test_prepare_with_on_error_fail_stops_at_the_first_bad_file(tmp_path, bad_folder, tiny_args):
    runs = tmp_path / "runs"
    result = cli("prepare", *tiny_args, "--set", "data.dataset=folder", "--set", f"data.root={bad_folder}",
                 "--set", "data.on_error=fail", "--runs-dir", runs, "--name", "p", "-q")
    assert_user_error(result, str(bad_folder / "a"))
    assert not [p for p in (runs / ".store").iterdir()]  # no store, complete or half-built


def test_more_mfccs_than_mel_bands_is_a_config_error_not_a_crash(tmp_path, tiny_args):
    result = cli("prepare", *tiny_args, "--set", "features.kind=mfcc", "--set", "features.n_mfcc=40",
                 "--runs-dir", tmp_path / "runs", "-q")
    assert_user_error(result, "features.n_mfcc=40")
