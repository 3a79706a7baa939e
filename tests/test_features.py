"""Audio and features: log-mel and MFCC against librosa, duration policies, MP3 handling."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from audiocomp.audio import AudioError, decode, fix_length, load, segments
from audiocomp.config import FeaturesConfig
from audiocomp.features.extract import FeatureExtractor, feature_shape


def _signal(sr: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t) * np.exp(-2 * t)
    return (0.5 * chirp + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.mark.parametrize("params", [
    dict(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, top_db=80.0),
    dict(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, top_db=80.0, padded=0.3),
    dict(sample_rate=16000, n_fft=512, hop_length=160, win_length=400, n_mels=40, f_min=50.0, f_max=7000.0, top_db=60.0),
])
def test_logmel_matches_librosa(params):
    import librosa

    padded = params.pop("padded", None)
    cfg = FeaturesConfig(duration=1.0, **params)
    y = _signal(cfg.sample_rate, 1.0)
    if padded:  # a short clip padded with zeros: the silent frames are skipped, the result must not change
        y[int(padded * cfg.sample_rate):] = 0
    ours = FeatureExtractor(cfg)(y)[0]
    ref = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max, pad_mode="constant"), ref=1.0, top_db=cfg.top_db)
    assert ours.shape == ref.shape == feature_shape(cfg)[1:]
    above = ref > ref.max() - cfg.top_db + 1e-3  # values above the top_db floor
    assert above.mean() > 0.3  # the comparison covers most of the real signal
    assert np.abs(ours - ref)[above].max() < 0.05


def test_mfcc_matches_librosa():
    import librosa

    cfg = FeaturesConfig(kind="mfcc", sample_rate=16000, duration=1.0, n_fft=512, hop_length=256, n_mels=40, n_mfcc=13)
    y = _signal(16000, 1.0)
    ours = FeatureExtractor(cfg)(y)[0]
    ref = librosa.feature.mfcc(y=y, sr=16000, n_mfcc=13, n_fft=512, hop_length=256, n_mels=40, pad_mode="constant")
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 0.05 * max(1.0, np.abs(ref).max() / 100)


def test_waveform_kind_is_the_resampled_audio():
    y = _signal(8000, 0.5)
    cfg = FeaturesConfig(kind="waveform", sample_rate=8000, duration=0.5)
    assert np.array_equal(FeatureExtractor(cfg)(y), y) and feature_shape(cfg) == (4000,)


def test_duration_policies():
    y = np.arange(10, dtype=np.float32) + 1
    assert fix_length(y, 6, "crop-center").tolist() == [3, 4, 5, 6, 7, 8]  # the middle of a long clip
    assert fix_length(y, 6, "crop-start").tolist() == [1, 2, 3, 4, 5, 6]
    assert fix_length(y, 6, "pad").tolist() == [1, 2, 3, 4, 5, 6]  # long: keep the start
    for policy in ("pad", "crop-center", "crop-start"):  # short clips: zeros appended at the end
        assert fix_length(y[:3], 5, policy).tolist() == [1, 2, 3, 0, 0]
        assert fix_length(y, 10, policy) is not None and fix_length(y, 10, policy).tolist() == y.tolist()
    # segment: whole windows, then the tail padded if it holds at least half a window, else dropped
    assert [s.tolist() for s in segments(y, 4)] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 0, 0]]
    assert [s.tolist() for s in segments(y, 3)] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert [s.tolist() for s in segments(y[:2], 4)] == [[1, 2, 0, 0]]  # short clip: one padded window
    assert all(len(s) == 4 for s in segments(np.ones(1001, np.float32), 4))


def test_decode_mixes_stereo_resamples_and_reads_offsets(tmp_path):
    sr = 16000
    left = _signal(sr, 1.0)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, -left * 0], axis=1), sr, subtype="PCM_24")
    y = load(tmp_path / "s.wav", 8000)
    assert len(y) == 8000 and np.abs(y).max() == pytest.approx(np.abs(left).max() / 2, rel=0.1)
    part, rate = decode(tmp_path / "s.wav", 0.25, 0.5)
    assert rate == sr and part.shape == (4000, 2)


def test_mp3_decodes_or_says_why(tmp_path, monkeypatch):
    if "MP3" in sf.available_formats():
        sf.write(str(tmp_path / "a.mp3"), _signal(22050, 0.5), 22050, format="MP3")
        assert len(load(tmp_path / "a.mp3", 22050)) > 10000
    (tmp_path / "b.mp3").write_bytes(b"\xff\xfb" + bytes(100))
    monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "", "FLAC": ""})
    with pytest.raises(AudioError, match=r"b\.mp3: this libsndfile .* cannot decode MP3"):
        decode(tmp_path / "b.mp3")


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"not audio at all" * 10, "cannot decode")])
def test_bad_files_name_the_file(tmp_path, content, reason):
    (tmp_path / "x.wav").write_bytes(content)
    with pytest.raises(AudioError, match=rf"x\.wav: .*{reason}"):
        decode(tmp_path / "x.wav")
