import numpy as np
import soundfile as sf

from audiocomp.datasets.synth import CLASSES, generate, render


def test_generation_is_deterministic_and_mixes_formats(tmp_path):
    a = generate(tmp_path / "a", per_class=4, duration=0.5, seed=3, progress=False)
    b = generate(tmp_path / "b", per_class=4, duration=0.5, seed=3, progress=False)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()
    for rel in files_a:  # float WAVs carry a PEAK chunk with a timestamp, so compare samples, not bytes
        if rel.suffix != ".csv":
            assert np.array_equal(sf.read(str(a / rel))[0], sf.read(str(b / rel))[0])
    infos = [sf.info(str(a / rel)) for rel in files_a if rel.suffix in (".wav", ".flac")]
    assert len(infos) == len(CLASSES) * 4 >= 8 * 4
    assert len({i.samplerate for i in infos}) >= 3
    assert {i.channels for i in infos} == {1, 2}
    assert {i.subtype for i in infos} >= {"PCM_16", "FLOAT"} and {i.format for i in infos} == {"WAV", "FLAC"}
    header = (a / "metadata.csv").read_text().splitlines()[0]
    assert header.startswith("filename,label,target,fold")


def test_other_seed_gives_other_audio(tmp_path):
    a = generate(tmp_path / "a", per_class=2, duration=0.5, seed=1, classes=["tone"], progress=False)
    b = generate(tmp_path / "b", per_class=2, duration=0.5, seed=2, classes=["tone"], progress=False)
    assert (a / "metadata.csv").read_text() != (b / "metadata.csv").read_text()


def test_rendered_clips_are_finite_bounded_and_noisy():
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        y, snr = render(cls, 16000, 1.0, rng)
        assert y.shape == (16000,) and np.isfinite(y).all() and np.abs(y).max() <= 1.0
        assert 0 <= snr <= 20
        assert np.abs(y[:50]).max() > 0  # background noise everywhere, not digital silence
