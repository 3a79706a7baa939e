"""Classify audio files with an exported folder (model.onnx, labels.json, preprocessing.json).

Torch-free on purpose: it imports only numpy, soundfile, onnxruntime (and soxr when a file must be
resampled), and nothing else from audiocomp, so that `audiocomp export` can copy this file into the
folder as predict.py and a Raspberry Pi needs just `pip install numpy soundfile soxr onnxruntime`:

    python predict.py . clip.wav other.flac --top-k 3 --json

Long files are cut into consecutive windows of the model's duration; each window gets an answer and the
file gets their mean probability. A file that cannot be read gets an error line; the others still run.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """A file that cannot be classified; the message names the file."""


# ------------------------------------------------------------------------------------------ audio

def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Decode (soundfile), mix to mono, resample with soxr HQ (as training did) to `sample_rate`."""
    import soundfile as sf

    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's message, without its traceback
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(f"{path}: cannot decode audio ({reason})") from None
    if data.size == 0:
        raise AudioError(f"{path}: no audio samples")
    y = data.mean(axis=1, dtype=np.float32)
    if sr != sample_rate:
        import soxr

        y = soxr.resample(y, sr, sample_rate, quality="HQ").astype(np.float32)
    if not np.isfinite(y).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return y


def fix_length(y: np.ndarray, length: int) -> np.ndarray:
    return np.pad(y, (0, length - len(y))) if len(y) < length else y[:length]


def windows(y: np.ndarray, length: int) -> list[tuple[int, np.ndarray]]:
    """(start sample, window) pairs: consecutive windows; the last partial one is kept (zero-padded) when
    it holds at least half a window; a short file gives one padded window (audio.io.segments' rule)."""
    starts = list(range(0, max(len(y) - length, 0) + 1, length))
    rest = len(y) - len(starts) * length
    if len(y) > length and rest >= length // 2:
        starts.append(len(starts) * length)
    return [(s, fix_length(y[s:s + length], length)) for s in starts]


# ------------------------------------------------------------------------------------------ features

def log_mel(y: np.ndarray, prep: dict, mel_basis: np.ndarray, dct: np.ndarray | None) -> np.ndarray:
    """(samples,) -> (1, bins, frames); numpy twin of FeatureExtractor (centred, zero-padded frames)."""
    n_fft, hop = prep["n_fft"], prep["hop_length"]
    win = prep.get("win_length") or n_fft
    window = np.zeros(n_fft, dtype=np.float32)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    padded = np.pad(y, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (T, n_fft)
    spec = np.fft.rfft(frames * window, axis=1)
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)  # (T, n_fft//2+1)
    db = 10.0 * np.log10(np.maximum(mel_basis @ power.T, 1e-10))  # (n_mels, T)
    if prep.get("top_db") is not None:
        db = np.maximum(db, db.max() - prep["top_db"])
    if dct is not None:
        db = dct @ db
    return db[None].astype(np.float32)


# ------------------------------------------------------------------------------------------ model

class OnnxClassifier:
    """An exported folder: `scores(windows)` maps (W, samples) to (W, classes) probabilities."""

    def __init__(self, folder: Path | str, threads: int = 0):
        import onnxruntime as ort

        folder = Path(folder)
        try:
            self.prep = json.loads((folder / "preprocessing.json").read_text(encoding="utf-8"))
            self.labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise FileNotFoundError(f"{folder}: not an exported model folder ({exc})") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / self.prep["model_file"]), opts,
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.sample_rate, self.samples = self.prep["sample_rate"], self.prep["samples"]
        self.mel_basis = self.dct = None
        if self.prep["input"] == "features" and self.prep["kind"] != "waveform":
            self.mel_basis = np.load(folder / "mel_basis.npy")
            self.dct = np.load(folder / "dct.npy") if self.prep["kind"] == "mfcc" else None

    def model_input(self, batch: np.ndarray) -> np.ndarray:
        if self.mel_basis is None:  # the graph takes samples (waveform model, or mel front end inside)
            return batch.astype(np.float32)
        return np.stack([log_mel(w, self.prep, self.mel_basis, self.dct) for w in batch])

    def scores(self, batch: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self.input_name: self.model_input(batch)})[0].astype(np.float64)
        return to_probabilities(logits, self.prep.get("multilabel", False))


def to_probabilities(logits: np.ndarray, multilabel: bool) -> np.ndarray:
    if multilabel:
        return 1.0 / (1.0 + np.exp(-logits))
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------------------------------ prediction

def top(probs: np.ndarray, labels: list[str], k: int) -> list[dict]:
    order = np.argsort(-probs)[:k]
    return [{"label": labels[i], "score": round(float(probs[i]), 6)} for i in order]


def predict_file(path: Path, clf, top_k: int = 3) -> dict:
    """One file -> {"file", "seconds", "top", "windows": [{"start_s", "end_s", "top"}]}."""
    y = load_audio(path, clf.sample_rate)
    parts = windows(y, clf.samples)
    probs = clf.scores(np.stack([w for _, w in parts]))  # (W, classes)
    labels, sr = clf.labels, clf.sample_rate
    return {"file": str(path), "seconds": round(len(y) / sr, 3), "top": top(probs.mean(axis=0), labels, top_k),
            "windows": [{"start_s": round(s / sr, 3), "end_s": round(min(s + clf.samples, len(y)) / sr, 3),
                         "top": top(p, labels, top_k)} for (s, _), p in zip(parts, probs)]}


AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def expand(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the audio files they hold (recursively, sorted)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out


def format_line(result: dict, as_json: bool) -> str:
    if as_json:
        return json.dumps(result)
    if "error" in result:
        return f"{result['file']}  ERROR {result['error']}"
    answers = "  ".join(f"{t['label']} {t['score']:.3f}" for t in result["top"])
    n = len(result["windows"])
    return f"{result['file']}  {answers}" + (f"  ({n} windows)" if n > 1 else "")


def predict_paths(paths: list[str], clf, top_k: int = 3, as_json: bool = False, out=None) -> int:
    """Print one line per file; returns the number of files that failed."""
    out = out or sys.stdout
    failed = 0
    for path in expand(paths):
        try:
            result = predict_file(path, clf, top_k)
        except (AudioError, OSError, ValueError) as exc:
            failed += 1
            msg = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            result = {"file": str(path), "error": msg}
        print(format_line(result, as_json), file=out, flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Example: python predict.py . clip.wav --top-k 3 --json")
    ap.add_argument("model_dir", help="the exported folder (model.onnx, labels.json, preprocessing.json)")
    ap.add_argument("files", nargs="+", help="audio files or folders of them")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    args = ap.parse_args(argv)
    try:
        clf = OnnxClassifier(args.model_dir, args.threads)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if predict_paths(args.files, clf, args.top_k, args.json) else 0


if __name__ == "__main__":
    sys.exit(main())
