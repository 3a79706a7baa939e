#!/usr/bin/env python
"""Count bad inputs tried and how many were handled cleanly.

Clean means: for audio, a one-line error naming the file (the file is skipped and counted by prepare) or,
for odd-but-valid audio, finite features; for configs, metadata, --set, run names and run references,
exit code 2 with one 'error:' line, no traceback and nothing written. The catalogues are the ones the
tests in tests/reliability use; random files are added on top (seeded).

Usage: python scripts/stress_bad_inputs.py [--random 300] [--seed 0]
Writes bench-results/stress_bad_inputs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.reliability.badaudio import CASES  # noqa: E402
from tests.reliability.test_bad_inputs_cli import BAD_CONFIGS, BAD_METADATA, BAD_SETS  # noqa: E402


def audio_results(work: Path, n_random: int, seed: int) -> list[dict]:
    import soundfile as sf

    from audiocomp.config import FeaturesConfig
    from audiocomp.features import featurize as store

    store._init_worker(FeaturesConfig(sample_rate=8000, duration=1.0, n_fft=256, hop_length=128, n_mels=32).model_dump())
    rng = np.random.default_rng(seed)
    files = []
    for name, (filename, make, expected) in CASES.items():
        make(work / filename)
        files.append(("audio catalogue", name, work / filename, expected))
    for i in range(n_random):  # random bytes, half of them behind a WAV header
        path = work / f"rand{i}{rng.choice(['.wav', '.flac', '.mp3', '.ogg'])}"
        head = b"RIFF\x00\x10\x00\x00WAVEfmt " if i % 2 else b""
        path.write_bytes(head + rng.bytes(int(rng.integers(0, 4096))))
        files.append(("random bytes", path.name, path, "either"))
    for i in range(n_random):  # valid files with odd rates, channel counts, lengths and levels
        path = work / f"odd{i}.wav"
        sr = int(rng.choice([1, 100, 4000, 8000, 44100, 192000]))
        y = rng.standard_normal((int(rng.integers(1, 6000)), int(rng.integers(1, 9)))) * float(
            rng.choice([0.0, 1e-30, 1e-6, 0.5, 100.0, 1e6]))
        sf.write(str(path), y, sr, subtype=str(rng.choice(["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"])))
        files.append(("odd valid audio", path.name, path, "either"))
    out = []
    for group, name, path, expected in files:
        try:
            _, pieces, err = store._featurize((0, str(path), 0.0, None, None))
        except BaseException as exc:  # the worker must never raise
            out.append({"group": group, "case": name, "clean": False, "detail": f"raised {type(exc).__name__}"})
            continue
        if err:
            clean = expected != "ok" and str(path) in err and "\n" not in err
        else:
            clean = expected != "error" and all(np.isfinite(p).all() for p in pieces)
        out.append({"group": group, "case": name, "clean": bool(clean), "detail": err or "finite features"})
    return out


def cli_results(work: Path) -> list[dict]:
    from typer.testing import CliRunner

    from audiocomp.cli import app
    from audiocomp.datasets.synth import generate

    synth = generate(work / "synth", per_class=3, duration=1.0, seed=0, progress=False)
    tiny = ["--set", "data.dataset=synth", "--set", "features.sample_rate=8000", "--set", "features.n_mels=32",
            "--set", "features.duration=1.0", "--set", "features.workers=1"]
    cases = []
    for name, (edit, _) in BAD_METADATA.items():
        cases.append(("metadata", name, edit, ["prepare", *tiny]))
    for name, (text, _) in BAD_CONFIGS.items():
        cases.append(("config file", name, text, ["prepare", "-c", "c.yaml", *tiny]))
    for expr in BAD_SETS:
        cases.append(("--set", expr, None, ["train", "--set", expr]))
    for name in ["../escape", "/tmp/abs", "a/b", ".hidden", "..", "."]:
        cases.append(("run name", name, None, ["prepare", *tiny, "--name", name]))
    for cmd in ("train", "eval"):
        cases.append(("--from", f"{cmd} --from missing", None, [cmd, "--from", "missing"]))
    out = []
    for group, name, payload, args in cases:
        case_dir = work / f"case{len(out)}"
        data = case_dir / "synth"
        shutil.copytree(synth, data)
        if group == "metadata":
            lines = (data / "metadata.csv").read_text().splitlines()
            (data / "metadata.csv").write_bytes(payload(lines))
        if group == "config file":
            (case_dir / "c.yaml").write_text(payload)
        before = sorted(p.relative_to(case_dir) for p in case_dir.rglob("*"))
        cwd = os.getcwd()
        os.chdir(case_dir)
        try:
            r = CliRunner().invoke(app, [*args, "--set", f"data.root={data}", "--runs-dir", "runs", "-q"]
                                   if group in ("metadata", "run name") else [*args, "--runs-dir", "runs", "-q"])
        finally:
            os.chdir(cwd)
        err = r.stderr.strip()
        written = sorted(p.relative_to(case_dir) for p in case_dir.rglob("*")) != before
        clean = r.exit_code == 2 and err.startswith("error: ") and "\n" not in err and not written
        out.append({"group": group, "case": name, "clean": clean, "detail": err[:200] + (" (wrote files)" if written else "")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=300, help="random-byte files and odd-audio files, each")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "stress_bad_inputs.json")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="stress-bad-"))
    try:
        (work / "audio").mkdir()
        results = audio_results(work / "audio", args.random, args.seed) + cli_results(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    tried, clean = Counter(r["group"] for r in results), Counter(r["group"] for r in results if r["clean"])
    summary = {"tried": len(results), "clean": sum(clean.values()),
               "by_group": {g: {"tried": tried[g], "clean": clean[g]} for g in tried},
               "not_clean": [r for r in results if not r["clean"]], "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{'input kind':18s} {'tried':>6s} {'clean':>6s}")
    for g in tried:
        print(f"{g:18s} {tried[g]:6d} {clean[g]:6d}")
    print(f"{'total':18s} {summary['tried']:6d} {summary['clean']:6d} -> {args.out}")
    for r in summary["not_clean"]:
        print(f"NOT CLEAN: {r['group']}: {r['case']}: {r['detail']}")
    return 0 if summary["clean"] == summary["tried"] else 1


if __name__ == "__main__":
    sys.exit(main())
