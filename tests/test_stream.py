"""`predict.py --stream`: real FSDD recordings, converted to raw S16_LE PCM, piped through the bundle's predict.py
give the windows, times and answers that file mode gives on the same audio (also at another rate and with two
channels), and it reports its real-time factor."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from audiocomp.deploy.predict_onnx import stream_windows



@pytest.fixture(scope="module")
def bundle(trained_run):
    """An rpi4 bundle of the tiny synthetic model (8 kHz, 1-s windows): its answers on speech are arbitrary,
    but stream and file mode must give the same ones."""
    from audiocomp.config import load_config
    from audiocomp.stages import export

    runs, model_run, cfg = trained_run
    return export.run(load_config([], ["export.target=rpi4"], base=cfg.to_dict()), model_run, runs,
                      name="exp-stream", force=True).path / "deploy"


@pytest.fixture
def speech(fsdd_root):
    """Real recordings back to back (int16, 8 kHz), cut to 3.6 s: three full 1-s windows and a 0.6-s tail."""
    files = sorted((fsdd_root / "recordings").glob("*_jackson_0.wav"))[:10]
    y = np.concatenate([sf.read(f, dtype="int16")[0] for f in files])
    assert len(y) >= 28800
    return y[:28800]


def file_mode(bundle, path, k=10):
    out = subprocess.run([sys.executable, str(bundle / "predict.py"), str(bundle), str(path), "--json",
                          "--top-k", str(k), "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["windows"]


def stream_mode(bundle, pcm: np.ndarray, *args, k=10):
    """Pipe interleaved int16 samples through `predict.py --stream --json`: (windows, summary)."""
    out = subprocess.run([sys.executable, str(bundle / "predict.py"), str(bundle), "--stream", "--json",
                          "--top-k", str(k), "--threads", "1", *args], input=pcm.astype("<i2").tobytes(),
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    summary = json.loads(out.stderr.decode().strip().splitlines()[-1])["summary"]
    return [json.loads(line) for line in out.stdout.decode().splitlines()], summary


def scores(window) -> dict:
    return {t["label"]: t["score"] for t in window["top"]}


@pytest.mark.realdata
def test_stream_at_the_model_rate_is_file_mode(bundle, speech, tmp_path):
    sf.write(tmp_path / "speech.wav", speech, 8000, subtype="PCM_16")
    want = file_mode(bundle, tmp_path / "speech.wav")
    got, summary = stream_mode(bundle, speech, "--hop", "1.0")
    assert len(want) == len(got) == 4  # 3 full windows and the tail (kept: it holds >= half a window)
    for w, g in zip(want, got):
        assert (w["start_s"], w["end_s"]) == (g["start_s"], g["end_s"])
        assert w["top"][0]["label"] == g["top"][0]["label"]
        assert max(abs(p - scores(g)[label]) for label, p in scores(w).items()) <= 1e-6
        assert g["ms"] > 0
    assert summary["windows"] == len(got) and summary["audio_s"] == pytest.approx(len(speech) / 8000, abs=1e-3)
    assert 0 < summary["real_time_factor"] == pytest.approx(summary["processing_s"] / summary["audio_s"], rel=0.01)


@pytest.mark.realdata
def test_stream_resamples_and_mixes_channels_like_file_mode(bundle, speech, tmp_path):
    """A 16-kHz stereo capture: file mode resamples the whole file (soxr one-shot), the stream chunk by chunk
    (soxr's streaming resampler); both mix the channels by their mean."""
    up = soxr.resample(speech.astype(np.float32), 8000, 16000, quality="HQ")
    left = np.clip(np.round(up), -32768, 32767).astype(np.int16)
    stereo = np.stack([left, (left // 2)], axis=1)  # (T, 2): the channels differ
    sf.write(tmp_path / "stereo16k.wav", stereo, 16000, subtype="PCM_16")
    want = file_mode(bundle, tmp_path / "stereo16k.wav")
    got, summary = stream_mode(bundle, stereo.reshape(-1), "--rate", "16000", "--channels", "2", "--hop", "1")
    assert len(want) == len(got) and summary["rate"] == 16000 and summary["model_rate"] == 8000
    for w, g in zip(want, got):
        assert w["start_s"] == g["start_s"] and w["top"][0]["label"] == g["top"][0]["label"]
        assert max(abs(p - scores(g)[label]) for label, p in scores(w).items()) <= 1e-5


@pytest.mark.realdata
def test_overlapping_windows_every_hop(bundle, speech, tmp_path):
    sf.write(tmp_path / "speech.wav", speech, 8000, subtype="PCM_16")
    whole = {w["start_s"]: scores(w) for w in file_mode(bundle, tmp_path / "speech.wav")}
    got, _ = stream_mode(bundle, speech, "--hop", "0.25")
    starts = [g["start_s"] for g in got]
    full = int((len(speech) - 8000) / 2000) + 1  # windows that fit entirely, one every 2000 samples
    assert starts == [0.25 * i for i in range(full + 1)]  # and a tail window at 2.75 s (0.85 s of audio)
    for g in got:  # the windows that start where file mode's do hold the same samples, hence the same answer
        if g["start_s"] in whole and g["end_s"] - g["start_s"] == 1.0:
            assert max(abs(p - scores(g)[label]) for label, p in whole[g["start_s"]].items()) <= 1e-6


def test_stream_windows_in_process_and_a_short_stream(bundle):
    from audiocomp.deploy.predict_onnx import OnnxClassifier

    clf = OnnxClassifier(bundle, 1)
    blocks = [np.full(300, 0.1, np.float32)]  # less than half a window, and nothing classified yet: padded
    stats = {}
    got = list(stream_windows(iter(blocks), clf, 8000, 0.5, 3, stats))
    assert [(g["start_s"], g["end_s"]) for g in got] == [(0.0, 0.037)] and stats["windows"] == 1
    assert list(stream_windows(iter([]), clf, 8000, 0.5)) == []
