"""Classify audio files with an exported folder (model.onnx, labels.json, preprocessing.json).

Torch-free on purpose: it imports only numpy, soundfile, onnxruntime (and soxr when a file must be
resampled), and nothing else from audiocomp, so that `audiocomp export` can copy this file into the
folder as predict.py and a Raspberry Pi needs just `pip install numpy soundfile soxr onnxruntime`:

    python predict.py . clip.wav other.flac --top-k 3 --json
    arecord -f S16_LE -r 16000 -c 1 | python predict.py . --stream --rate 16000

Long files are cut into consecutive windows of the model's duration; each window gets an answer and the
file gets their mean probability. A file that cannot be read gets an error line; the others still run.
`--stream` reads raw 16-bit PCM from standard input and classifies a sliding window every `--hop` seconds.

The one module over ~300 lines, on purpose: it is copied alone into every device bundle, so the audio,
features, model and command-line sections that would be separate modules elsewhere must live in one file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


class AudioError(ValueError):
    """A file that cannot be classified; the message names the file."""


class ModelError(RuntimeError):
    """The installed onnxruntime cannot load or run the model (too old a release, a missing kernel)."""


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
        model = folder / self.prep["model_file"]
        try:
            self.session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own exception types; requirements.txt names a release that works
            raise ModelError(f"{model}: onnxruntime {ort.__version__} cannot load it: "
                             f"{str(exc).splitlines()[0][:300]}") from None
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
    order = np.argsort(-probs, kind="stable")[:k]  # exact ties (INT8) go to the first class, on every machine
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


# ------------------------------------------------------------------------------------------ live audio

def pcm_blocks(stream, channels: int, frames: int):
    """Raw S16_LE PCM from a binary stream -> float32 mono blocks of up to `frames` samples (the same
    scaling soundfile applies to 16-bit files; channels mixed by their mean, as in file mode)."""
    frame_bytes = 2 * channels
    rest = b""
    while True:
        data = stream.read(frames * frame_bytes)
        if not data:
            return
        data = rest + data
        whole = len(data) // frame_bytes * frame_bytes
        rest = data[whole:]
        pcm = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, channels)
        yield pcm.mean(axis=1, dtype=np.float32) / np.float32(32768)


def stream_windows(blocks, clf, rate: int, hop_s: float, top_k: int = 3, stats: dict | None = None):
    """Classify the window of the model's duration that starts every `hop_s` seconds of a stream of mono
    blocks at `rate` Hz (resampled with soxr's streaming HQ resampler when it differs from the model's).
    Yields {"start_s", "end_s", "top", "ms"}; `ms` is the window's feature + inference time. At the end of
    the stream a last partial window is classified, zero-padded, under file mode's rule (it holds at least
    half a window, or nothing was classified yet), so with hop = duration the windows are file mode's.
    `stats` receives audio_s and processing_s (resampling included) for the real-time factor."""
    sr, length = clf.sample_rate, clf.samples
    hop = max(1, int(round(hop_s * sr)))
    resampler = None
    if rate != sr:
        import soxr

        resampler = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")
    stats = {} if stats is None else stats
    stats.update(audio_s=0.0, processing_s=0.0, windows=0)
    buf, offset, start, received = np.zeros(0, np.float32), 0, 0, 0  # buf[0] is stream sample `offset`

    def classify(window, end):
        t = time.perf_counter()
        probs = clf.scores(window[None])[0]
        spent = time.perf_counter() - t
        stats["processing_s"] += spent
        stats["windows"] += 1
        return {"start_s": round(start / sr, 3), "end_s": round(end / sr, 3), "top": top(probs, clf.labels, top_k),
                "ms": round(spent * 1e3, 3)}

    for block in _then_end(blocks):
        t = time.perf_counter()
        if block is not None:
            stats["audio_s"] += len(block) / rate
        if resampler is not None:
            block = resampler.resample_chunk(np.zeros(0, np.float32) if block is None else block, last=block is None)
        stats["processing_s"] += time.perf_counter() - t
        if block is not None and len(block):
            buf = np.concatenate([buf, block])
            received += len(block)
        while start + length <= received:
            yield classify(buf[start - offset:start - offset + length], start + length)
            start += hop
        drop = min(start, received) - offset  # samples no later window needs
        buf, offset = buf[drop:], offset + drop
    if received > start and (received - start >= length // 2 or start == 0):
        yield classify(fix_length(buf[start - offset:], length), received)


def _then_end(blocks):
    yield from blocks
    yield None  # end of stream: flush the resampler, classify the tail


def stream_main(args, clf, out=None, err=None) -> int:
    """`--stream`: one line (or JSON object) per window on `out`, the real-time factor on `err` at the end."""
    out, err = out or sys.stdout, err or sys.stderr
    rate = args.rate or clf.sample_rate
    hop = args.hop if args.hop is not None else clf.samples / clf.sample_rate / 2
    stats: dict = {}
    blocks = pcm_blocks(sys.stdin.buffer, args.channels, max(1, rate // 10))  # 0.1-s reads: low latency
    try:
        for w in stream_windows(blocks, clf, rate, hop, args.top_k, stats):
            if args.json:
                line = json.dumps(w)
            else:
                answers = "  ".join(f"{t['label']} {t['score']:.3f}" for t in w["top"])
                line = f"{w['start_s']:9.3f}-{w['end_s']:.3f} s  {answers}  ({w['ms']:.1f} ms)"
            print(line, file=out, flush=True)
    except KeyboardInterrupt:  # Ctrl-C ends a live session: still report what was measured
        pass
    except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
        return 0
    rtf = stats["processing_s"] / stats["audio_s"] if stats["audio_s"] else None
    summary = {"windows": stats["windows"], "audio_s": round(stats["audio_s"], 3), "rate": rate,
               "model_rate": clf.sample_rate, "hop_s": hop, "processing_s": float(f"{stats['processing_s']:.4g}"),
               # significant digits, not decimals: real-time factors are tiny
               "real_time_factor": None if rtf is None else float(f"{rtf:.4g}"), "threads": args.threads}
    if args.json:
        print(json.dumps({"summary": summary}), file=err, flush=True)
    else:
        print(f"stream: {summary['windows']} windows over {summary['audio_s']:.1f} s of audio at {rate} Hz, "
              f"processing {summary['processing_s']:.3f} s: real-time factor "
              f"{'n/a' if rtf is None else f'{rtf:.4f}'} (threads {args.threads or 'all'})", file=err, flush=True)
    return 0 if stats["audio_s"] else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Example: python predict.py . clip.wav --top-k 3 --json")
    ap.add_argument("model_dir", help="the exported folder (model.onnx, labels.json, preprocessing.json)")
    ap.add_argument("files", nargs="*", help="audio files or folders of them")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    live = ap.add_argument_group("live audio (--stream)")
    live.add_argument("--stream", action="store_true", help="read raw S16_LE PCM from standard input")
    live.add_argument("--rate", type=int, help="input sample rate in Hz [default: the model's]")
    live.add_argument("--channels", type=int, default=1, help="interleaved input channels, mixed to mono")
    live.add_argument("--hop", type=float, help="seconds between window starts [default: half the model's window]")
    args = ap.parse_intermixed_args(argv)
    if args.stream == bool(args.files):
        ap.error("give audio files, or --stream to read PCM from standard input (not both)")
    if args.stream and (args.channels < 1 or (args.rate is not None and args.rate < 1)
                        or (args.hop is not None and args.hop <= 0)):
        ap.error("--rate, --channels and --hop must be positive")
    try:
        clf = OnnxClassifier(args.model_dir, args.threads)
    except (FileNotFoundError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.stream:
        return stream_main(args, clf)
    return 1 if predict_paths(args.files, clf, args.top_k, args.json) else 0


if __name__ == "__main__":
    sys.exit(main())
