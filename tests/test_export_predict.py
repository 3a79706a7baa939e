"""Export (with and without the mel front end) matches the original; predict's output and error handling;
the exported-folder path never imports torch."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from audiocomp.compress.onnx import run_session, session
from audiocomp.deploy.frontend import LogMelFrontend
from audiocomp.deploy.predict_onnx import OnnxClassifier, log_mel, predict_paths, windows
from audiocomp.features.extract import FeatureExtractor


@pytest.fixture(scope="module")
def exports(trained_run):
    from audiocomp.stages import export

    runs, model_run, cfg = trained_run
    plain = export.run(cfg, model_run, runs, name="exp-plain", force=True)
    fe = export.run(cfg, model_run, runs, name="exp-fe", force=True, with_frontend=True)
    return plain, fe, cfg


def test_exported_models_match_the_original(exports):
    plain, fe, _ = exports
    for run in (plain, fe):
        m = run.metrics()
        assert m["max_abs_diff"] < 1e-4 and m["top1_agreement"] == 1.0 and m["check_items"] > 0
        assert {"model.onnx", "labels.json", "preprocessing.json", "predict.py"} <= set(m["files"])
    assert fe.metrics()["with_frontend"] and fe.metrics()["frontend_max_abs_diff_db"] < 1e-3
    prep = json.loads((fe.path / "deploy" / "preprocessing.json").read_text())
    assert prep["input"] == "waveform" and prep["samples"] == 8000 and prep["n_mels"] == 32


def test_onnx_frontend_matches_feature_extractor(tmp_path, tiny_cfg):
    """The opset-17 STFT graph alone against FeatureExtractor (torch STFT + librosa mel basis)."""
    feats = tiny_cfg.features
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    y = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * rng.standard_normal(8000)]).astype(np.float32)
    torch.onnx.export(LogMelFrontend(feats).eval(), (torch.from_numpy(y),), str(tmp_path / "fe.onnx"),
                      input_names=["audio"], dynamic_axes={"audio": {0: "batch"}}, opset_version=17, dynamo=False)
    got = run_session(session(tmp_path / "fe.onnx", threads=1), y)
    ext = FeatureExtractor(feats)
    want = np.stack([ext(w) for w in y])
    assert got.shape == want.shape == (2, 1, 32, 63)
    assert np.abs(got - want).max() < 1e-2  # dB, float32 STFT in two runtimes
    # and the numpy twin used by torch-free predict
    np_db = log_mel(y[0], {"n_fft": 256, "hop_length": 128, "top_db": feats.top_db}, ext.mel_basis.numpy(), None)
    assert np.abs(np_db - want[0]).max() < 1e-2


def test_windows_follow_the_segment_rule():
    y = np.arange(25, dtype=np.float32)
    assert [s for s, _ in windows(y, 10)] == [0, 10, 20]  # last part 5 >= half: kept, padded
    assert [s for s, _ in windows(y[:24], 10)] == [0, 10]  # last part 4 < half: dropped
    assert len(windows(y[:3], 10)) == 1 and windows(y[:3], 10)[0][1].shape == (10,)


def _clips(tmp_path, synth_root):
    good = sorted((synth_root).rglob("*.wav"))[0]
    long = tmp_path / "long.wav"
    sf.write(long, np.random.default_rng(1).standard_normal(8000 * 3).astype(np.float32) * 0.1, 16000)  # 1.5 s
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    return good, long, bad


def test_predict_json_schema_and_per_file_errors(exports, tmp_path, synth_root, capsys):
    plain, fe, _ = exports
    good, long, bad = _clips(tmp_path, synth_root)
    for run in (plain, fe):
        failed = predict_paths([str(good), str(bad), str(long)], OnnxClassifier(run.path / "deploy", 1), 2, True)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert failed == 1 and len(lines) == 3
        ok, err, lng = lines
        assert set(ok) == {"file", "seconds", "top", "windows"} and len(ok["top"]) == 2
        assert all(set(t) == {"label", "score"} and 0 <= t["score"] <= 1 for t in ok["top"])
        assert err["file"] == str(bad) and str(bad) in err["error"] and "top" not in err
        assert len(lng["windows"]) == 2 and lng["windows"][1]["start_s"] == 1.0  # 1.5 s at 1 s windows
    a, b = (OnnxClassifier(r.path / "deploy", 1) for r in (plain, fe))
    x = np.stack([w for _, w in windows(np.random.default_rng(2).standard_normal(8000).astype(np.float32), 8000)])
    assert np.abs(a.scores(x) - b.scores(x)).max() < 1e-3  # numpy front end == in-graph front end


def test_predict_cli_exit_code_and_torch_free_path(exports, tmp_path, synth_root):
    _, fe, _ = exports
    good, _, bad = _clips(tmp_path, synth_root)
    code = ("import sys\nfrom audiocomp.cli import main\nsys.argv=['audiocomp','predict',sys.argv[1],*sys.argv[2:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', rc)")
    out = subprocess.run([sys.executable, "-c", code, str(fe.path / "deploy"), str(good), str(bad)],
                         capture_output=True, text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "NO-TORCH 1", out.stdout + out.stderr
    assert "ERROR" in lines[1] and str(bad) in lines[1] and len(lines[0].split()) == 7  # file + 3 x (label score)
    # the copied predict.py runs standalone in its folder
    out = subprocess.run([sys.executable, "predict.py", ".", str(good), "--json"], cwd=fe.path / "deploy",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and json.loads(out.stdout)["file"] == str(good)


def test_predict_from_a_quantized_model_run_in_a_fresh_process(trained_run, tmp_path, synth_root, capsys):
    """`audiocomp predict RUN` rebuilds any model run, a quantized one too, in a process that has imported
    nothing of audiocomp's compression code (the loader registry is filled in on the way), and answers as
    the model loaded here does."""
    from pathlib import Path

    from audiocomp.config import load_config
    from audiocomp.stages import quantize
    from audiocomp.stages.predict import classifier

    runs, model_run, cfg = trained_run
    qcfg = load_config([], ["quantize.method=static", "quantize.calibration_batches=1", "quantize.latency_runs=2",
                            "quantize.allow_degraded=true"], base=cfg.to_dict())
    q = quantize.run(qcfg, model_run, runs, name="predict-int8", force=True, progress=False)
    good, _, _ = _clips(tmp_path, synth_root)
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-m", "audiocomp", "predict", str(q.path), str(good), "--json"],
                         capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert predict_paths([str(good)], classifier(q.path), 3, True) == 0
    assert json.loads(out.stdout)["top"] == json.loads(capsys.readouterr().out)["top"]


def test_an_onnx_int8_artifact_is_evaluated_exported_and_benched_as_itself(trained_run, tmp_path):
    """A model folder whose last compression step is an ONNX Runtime INT8 file (what quantization writes)."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from audiocomp.compress.onnx import export_onnx
    from audiocomp.config import load_config
    from audiocomp.models import load_model
    from audiocomp.runs import Run, atomic_write_json
    from audiocomp.stages import bench, evaluate, export

    runs, model_run, cfg = trained_run
    q = runs / "tiny-int8"
    shutil.copytree(model_run.path, q, dirs_exist_ok=True)
    model, spec = load_model(q / "model")
    export_onnx(model, spec.feature_shape, tmp_path / "float.onnx")
    quantize_dynamic(str(tmp_path / "float.onnx"), str(q / "model" / "model.onnx"), weight_type=QuantType.QInt8)
    spec.compression = [{"stage": "quantize", "method": "dynamic", "format": "int8", "artifact": "model.onnx",
                         "backend": "onnxruntime"}]
    atomic_write_json(q / "model" / "arch.json", spec.to_dict())
    manifest = json.loads((q / "manifest.json").read_text())  # quantized from the trained run: its float parent
    manifest.update(stage="quantize", parents=[{"name": model_run.name, "path": str(model_run.path), "stage": "train"}])
    atomic_write_json(q / "manifest.json", manifest)
    qrun = Run(q)

    facts = evaluate.run(cfg, qrun, runs, name="ev-int8", force=True, progress=False).metrics()["model_facts"]
    assert facts["format"] == "int8" and facts["file_bytes"] == (q / "model" / "model.onnx").stat().st_size
    assert "onnx initializers" in facts["parameters_source"] and facts["macs"] > 0
    exp = export.run(cfg, qrun, runs, name="exp-int8", force=True, tolerance=0.1)
    assert (exp.path / "deploy" / "model.onnx").read_bytes() == (q / "model" / "model.onnx").read_bytes()
    bcfg = load_config([], ["bench.iterations=3", "bench.threads=[1]", "bench.fresh_process=false"], base=cfg.to_dict())
    m = bench.run(bcfg, qrun, runs, name="bench-int8", force=True, progress=False).metrics()
    assert "unavailable" in m["runtimes"]["torch"] and m["runtimes"]["onnxruntime"]["threads"]["1"]["latency"]["n"] == 3


@pytest.mark.realdata
def test_predict_on_real_recordings(exports, fsdd_root, capsys):
    """Real 8-kHz spoken digits (short, so one padded window each) through both exported folders."""
    files = sorted((fsdd_root / "recordings").glob("*.wav"))[:5]
    for run in exports[:2]:
        assert predict_paths([str(f) for f in files], OnnxClassifier(run.path / "deploy", 1), 3, True) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [d["file"] for d in lines] == [str(f) for f in files]
        assert all(len(d["windows"]) == 1 and abs(sum(t["score"] for t in d["top"])) <= 1 + 1e-6 for d in lines)


def test_a_torch_quantized_model_is_refused_with_the_portable_route_named(tmp_path):
    from audiocomp.models import ModelSpec, build_model
    from audiocomp.models.io import ModelLoadError
    from audiocomp.stages.export import model_onnx

    spec = ModelSpec("cnn", 3, [1, 16, 20], kwargs={"channels": [4]},
                     compression=[{"stage": "quantize", "backend": "torch", "format": "int8-static"}])
    with pytest.raises(ModelLoadError, match="quantize.backend=onnxruntime"):
        model_onnx(build_model(spec), spec, tmp_path, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()
