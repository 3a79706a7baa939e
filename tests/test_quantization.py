"""Quantization: every method on every model family, accuracy kept on a learnable task, calibration only on
training rows, reload in a fresh process, the near-chance guard, and the CLI end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from audiocomp.compress import quantization as q
from audiocomp.config import ConfigError, QuantizeConfig, load_config
from audiocomp.models import ModelSpec, build_model, load_model
from audiocomp.runs import atomic_write_json

warnings.filterwarnings("ignore", category=UserWarning)
REPO = Path(__file__).resolve().parents[1]
METHODS = [("torch", "dynamic"), ("torch", "fp16"), ("torch", "static"), ("torch", "qat"),
           ("onnxruntime", "dynamic"), ("onnxruntime", "static")]
FAMILIES = {  # tiny members of each model family
    "cnn": ModelSpec("cnn", 4, [1, 16, 20], {"channels": [4, 8], "hidden": 8}, norm_mode="global"),
    "lstm": ModelSpec("lstm", 4, [1, 16, 20], {"hidden_size": 8, "num_layers": 1}),
    "cnn1d": ModelSpec("cnn1d", 4, [1600], {"channels": [4, 8], "first_kernel": 40, "first_stride": 4}),
    "resnet18": ModelSpec("resnet18", 4, [1, 16, 20], {}, input_size=[32, 32]),
}
ACCURACY_TOLERANCE = 0.05  # static INT8 vs float32 on the same test items (one item is 1/80 here)


def _batches(shape, n=2, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, 4, (batch,), generator=g)) for _ in range(n)]


def _quantize(spec, backend, method, folder, **cfg):
    torch.manual_seed(0)
    model = build_model(spec).eval()
    qc = QuantizeConfig(backend=backend, method=method, qat_epochs=1, **cfg)
    calib = _batches(spec.feature_shape)
    qmodel, step, report = q.quantize(model, spec, calib, qc, folder, train_batches=_Train(calib))
    saved = ModelSpec.from_dict({**spec.to_dict(), "compression": [step]})
    atomic_write_json(Path(folder) / "arch.json", saved.to_dict())
    return model, qmodel, step, report


class _Train(list):
    def set_epoch(self, epoch):
        pass


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("backend,method", METHODS)
def test_every_method_on_every_family(family, backend, method, tmp_path):
    spec = FAMILIES[family]
    model, qmodel, step, report = _quantize(spec, backend, method, tmp_path)
    x = _batches(spec.feature_shape, n=1, seed=1)[0][0]
    with torch.no_grad():
        ref, out = model(x), qmodel(x)
    assert out.shape == ref.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    # quantized, not broken: close to float32 on random weights and inputs (QAT fine-tunes, so it moves away)
    assert method == "qat" or q.sqnr_db(float((ref ** 2).sum()), float(((ref - out) ** 2).sum()) or 1e-30) > 8
    assert step["format"] == q.FORMATS[f"{backend}:{method}"] and (tmp_path / step["artifact"]).is_file()
    reloaded, _ = load_model(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), out, rtol=1e-5, atol=1e-5)
    cover = q.coverage(model, qmodel, step, report)
    assert 0 < cover["parameters_covered"] <= cover["parameters_total"]
    if backend == "torch" and method != "fp16":
        assert cover["quantized_layers"] and not any("packed" in n.lower() or "_all_weight" in n
                                                     for n in cover["quantized_layers"])
    sqnr = q.sqnr_report(model, qmodel, step, _batches(spec.feature_shape, n=1))
    # per layer, except where the runtime hides the layers: ONNX Runtime, and FP16 computed on a GPU (ComputeAs)
    per_layer = backend == "torch" and not (method == "fp16" and torch.cuda.is_available())
    assert "output" in sqnr and (len(sqnr) > 1) == per_layer


def test_compacted_names_change_the_bytes_not_the_graph(tmp_path, monkeypatch):
    """ONNX Runtime INT8 graphs are written with short internal names: against the quantizer's own file (the
    same quantization with compaction switched off), the same outputs bit for bit, the same I/O names and
    parameter counts, fewer bytes."""
    import onnx
    import onnxruntime as ort

    from audiocomp.compress.onnx import compact_names
    from audiocomp.compress.quantization import onnx_quantizers
    from audiocomp.evaluate.counts import onnx_parameter_counts

    spec = FAMILIES["cnn"]
    _, _, step, _ = _quantize(spec, "onnxruntime", "static", tmp_path / "short")
    monkeypatch.setattr(onnx_quantizers, "compact_names", lambda path: 0)
    _quantize(spec, "onnxruntime", "static", tmp_path / "long")
    short, long = tmp_path / "short/model.onnx", tmp_path / "long/model.onnx"
    assert long.stat().st_size - short.stat().st_size == step["names_compacted_bytes"] > 0
    assert compact_names(short) == 0  # nothing left to compact
    graph = onnx.load(str(short)).graph
    assert [i.name for i in graph.input] == ["features"] and [o.name for o in graph.output] == ["logits"]
    assert all(not n.name for n in graph.node) and max(len(t.name) for t in graph.initializer) <= 3
    x = _batches(spec.feature_shape, n=1, seed=1)[0][0].numpy()
    outs = [ort.InferenceSession(str(f)).run(None, {"features": x})[0] for f in (short, long)]
    np.testing.assert_array_equal(*outs)
    assert onnx_parameter_counts(short) == onnx_parameter_counts(long)


def test_dynamic_on_a_cnn_says_it_covers_little(tmp_path):
    spec = ModelSpec("cnn", 4, [1, 16, 20], {"channels": [16, 32], "hidden": 8})
    model, qmodel, step, report = _quantize(spec, "torch", "dynamic", tmp_path)
    cover = q.coverage(model, qmodel, step, report)
    assert set(cover["quantized_layers"]) == {"backbone.4", "backbone.7"}  # the two Linear layers only
    assert cover["covered_share"] < 0.5 and "convolutions stay float32" in cover["note"]


def test_static_keeps_first_and_last_layers_float(tmp_path):
    spec = FAMILIES["cnn"]
    model, qmodel, step, _ = _quantize(spec, "torch", "static", tmp_path, keep_float=["first", "last"])
    assert step["float_layers"] == ["0.0", "7"]
    layers = q.quantized_layers(qmodel)
    assert "backbone.0.0" not in layers and "backbone.7" not in layers and "backbone.1.0" in layers
    reloaded, _ = load_model(tmp_path)
    assert "backbone.0.0" not in q.quantized_layers(reloaded)


def test_options_the_backend_lacks_are_config_errors():
    with pytest.raises(ConfigError, match="quantize.method=qat: not available with quantize.backend=onnxruntime"):
        q.check_options(QuantizeConfig(backend="onnxruntime", method="qat"))
    with pytest.raises(ConfigError, match="calibration=entropy"):
        q.check_options(QuantizeConfig(backend="torch", method="static", calibration="entropy"))


def test_sqnr_is_infinite_for_identical_and_drops_with_noise():
    assert q.sqnr_db(1.0, 0.0) is None
    assert q.sqnr_db(100.0, 1.0) == pytest.approx(20.0)


# ------------------------------------------------------------------------------ through the stage

@pytest.fixture(scope="module")
def tones_root(tmp_path_factory) -> Path:
    """A learnable synthetic task: 4 classes of noisy tones at distinct pitches (folder layout)."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    t = np.arange(4000) / 8000
    for k, freq in enumerate([300, 700, 1500, 2800]):
        (root / f"c{k}").mkdir()
        for i in range(40):
            wave = 0.5 * np.sin(2 * np.pi * freq * (1 + rng.uniform(-0.03, 0.03)) * t) + 0.1 * rng.standard_normal(len(t))
            sf.write(root / f"c{k}" / f"{i}.wav", wave.astype(np.float32), 8000)
    return root


@pytest.fixture(scope="module")
def tones_run(tones_root, tmp_path_factory):
    from audiocomp.stages import train

    runs = tmp_path_factory.mktemp("runs")
    cfg = load_config([], _tone_overrides(tones_root))
    return train.run(cfg, runs, name="tones-train", progress=False), runs


def _tone_overrides(root):
    return [f"data.root={root}", "data.dataset=folder", "features.sample_rate=8000", "features.duration=0.5",
            "features.n_fft=256", "features.hop_length=128", "features.n_mels=32", "features.workers=1",
            "features.normalize=global", "model.name=cnn", "model.kwargs.channels=[16,32]", "model.kwargs.dropout=0",
            "train.epochs=8", "train.batch_size=8", "train.lr=0.003", "split.val_fraction=0.1", "quantize.calibration_batches=3",
            "quantize.calibration_batch_size=16", "quantize.latency_runs=5"]


def _quantize_run(tones_root, tones_run, *sets, model=None, **kw):
    from audiocomp.stages import quantize

    run, runs = tones_run
    cfg = load_config([], [*_tone_overrides(tones_root), *sets])
    return quantize.run(cfg, model or run, runs, force=True, progress=False, **kw)


def test_static_int8_keeps_accuracy_on_the_same_test_items(tones_root, tones_run):
    m = _quantize_run(tones_root, tones_run, "quantize.method=static").metrics()
    assert m["float_test_accuracy"] >= 0.9, "the float model must have learned the task for this test to mean anything"
    assert m["test_items"] == len(json.loads((tones_run[0].parent("prepare").path / "splits.json").read_text())
                                  ["splits"][0]["test"])
    assert abs(m["float_test_accuracy"] - m["test_accuracy"]) <= ACCURACY_TOLERANCE
    assert m["file_bytes"] < m["float_file_bytes"] and m["format"] == "int8-static" and m["engine"] == "x86"
    assert m["sqnr_db"]["output"] > 10 and "backbone.0.0" in m["sqnr_db"]
    assert m["latency_batch1_1thread"]["quantized_ms"] > 0


def test_calibration_uses_only_training_rows(tones_root, tones_run):
    m = _quantize_run(tones_root, tones_run, "quantize.method=static").metrics()
    split = json.loads((tones_run[0].parent("prepare").path / "splits.json").read_text())["splits"][0]
    used = set(m["calibration_rows"])
    assert len(used) == 3 * 16 and used <= set(split["train"]) and not used & set(split["test"])


def test_broken_calibration_trips_the_near_chance_guard(tones_root, tones_run, monkeypatch):
    from audiocomp.runs import Run
    from audiocomp.stages import quantize

    real = quantize.calibration_batches

    def broken(*a, **k):  # calibrate on constant features: activation ranges collapse, real inputs saturate
        return [(torch.full_like(x, float(x.mean())), y) for x, y in real(*a, **k)]

    monkeypatch.setattr(quantize, "calibration_batches", broken)
    with pytest.raises(quantize.DegradedError, match="near chance.*--allow-degraded"):
        _quantize_run(tones_root, tones_run, "quantize.method=static", "quantize.calibration=minmax")
    from audiocomp.stages.naming import run_name

    cfg = load_config([], [*_tone_overrides(tones_root), "quantize.method=static", "quantize.calibration=minmax"])
    failed = Run(tones_run[1] / run_name("quantize", cfg, ["tones-train"]))
    assert failed.status == "failed" and failed.metrics()["degraded"] is True
    kept = _quantize_run(tones_root, tones_run, "quantize.method=static", "quantize.calibration=minmax",
                         allow_degraded=True)
    assert kept.status == "done" and kept.metrics()["degraded"] is True


@pytest.mark.slow
@pytest.mark.parametrize("sets", [["quantize.method=static"], ["quantize.backend=onnxruntime", "quantize.method=static"]])
def test_reload_in_a_fresh_process_gives_the_same_outputs(tones_root, tones_run, sets, tmp_path):
    run = _quantize_run(tones_root, tones_run, *sets)
    x = torch.randn(3, *load_model(run.path / "model")[1].feature_shape)
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys, numpy as np, torch; from audiocomp import load_model; "
            "m, _ = load_model(sys.argv[1]); x = torch.from_numpy(np.load(sys.argv[2])); "
            "np.save(sys.argv[3], m(x).detach().numpy())")
    subprocess.run([sys.executable, "-c", code, str(run.path / "model"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, env={"PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
                                    "PATH": "/usr/bin:/bin"}, timeout=120)
    model, _ = load_model(run.path / "model")
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_quantize_cli_end_to_end(tiny_overrides, tmp_path):
    from typer.testing import CliRunner

    from audiocomp.cli import app

    runner = CliRunner()
    runs = str(tmp_path / "runs")
    res = runner.invoke(app, ["train", "--runs-dir", runs, "--name", "t", "-q", *sum([["--set", s] for s in tiny_overrides], [])])
    assert res.exit_code == 0, res.output
    quant_yaml = tmp_path / "quant.yaml"
    quant_yaml.write_text("quantize:\n  backend: onnxruntime\n  method: dynamic\n  calibration_batches: 2\n  latency_runs: 3\n")
    res = runner.invoke(app, ["quantize", "--from", "t", "--runs-dir", runs, "-c", str(quant_yaml), "--name", "tq",
                              "--allow-degraded", "-q"])
    assert res.exit_code == 0, res.output
    assert "onnx-int8-dynamic" in res.output
    m = json.loads((tmp_path / "runs" / "tq" / "metrics.json").read_text())
    assert m["file_bytes"] == (tmp_path / "runs" / "tq" / "model" / "model.onnx").stat().st_size
    res = runner.invoke(app, ["eval", "--from", "tq", "--runs-dir", runs, "-q"])
    assert res.exit_code == 0, res.output
    ev = json.loads(next((tmp_path / "runs").glob("eval-cnn-*/metrics.json")).read_text())
    assert ev["model_facts"]["format"] == "onnx-int8-dynamic" and ev["model_facts"]["file_bytes"] == m["file_bytes"]
    assert ev["accuracy"] == pytest.approx(m["test_accuracy"])
    res = runner.invoke(app, ["quantize", "--from", "t", "--runs-dir", runs, "--set", "quantize.method=qat",
                              "--set", "quantize.backend=onnxruntime"])
    assert res.exit_code == 2 and "not available with quantize.backend=onnxruntime" in res.output
    res = runner.invoke(app, ["quantize", "--from", "tq", "--runs-dir", runs, "--name", "again"])
    assert res.exit_code == 2 and "already quantized" in res.output


@pytest.mark.slow
def test_demo_includes_the_quantize_stages(tmp_path, monkeypatch):
    from audiocomp.runs import Run
    from audiocomp.stages import demo

    monkeypatch.setattr(demo, "PER_CLASS", 4)
    demo.run(tmp_path, ["train.epochs=1", "features.sample_rate=8000", "features.n_mels=32", "features.workers=1",
                        "model.kwargs.channels=[4,8]", "quantize.calibration_batches=1", "quantize.latency_runs=2",
                        "quantize.allow_degraded=true"], progress=False)
    made = {s["id"]: s["run"] for s in json.loads((tmp_path / "pipeline.json").read_text())["stages"]}
    for backend, fmt in (("torch", "int8-static"), ("onnxruntime", "onnx-int8-static")):
        assert Run(tmp_path / "runs" / made[f"demo-quantize-{backend}"]).metrics()["format"] == fmt
    report = (tmp_path / "report" / "report.md").read_text()
    assert "int8-static" in report and "onnx-int8-static" in report


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "quantize").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_quantize_configs_validate(path):
    q.check_options(load_config([path]).quantize)


def test_calibration_batches_are_the_first_batches_of_the_seeded_shuffle():
    from audiocomp.features.batches import ArrayBatches, calibration_batches, calibration_rows

    feats, targets, rows = np.random.rand(50, 1, 4, 3).astype(np.float16), np.arange(50) % 5, np.arange(3, 43)
    got = calibration_batches(feats, targets, calibration_rows(rows, 8, 3, seed=7), 8)
    want = list(ArrayBatches(feats, targets, rows, 8, shuffle=True, seed=7))[:3]
    assert len(got) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(got, want))
    assert set(calibration_rows(rows, 8, 3, seed=7)) <= set(rows)


def test_a_structurally_pruned_run_quantizes_and_reloads(tones_root, tones_run):
    """The pruning stage saves arch.json with the pruned parameter shapes; quantize must rebuild those."""
    from audiocomp.models.io import save_model
    from audiocomp.models.reshape import record_shapes
    from audiocomp.stages.context import stage_run

    train_run, runs = tones_run
    cfg = load_config([], _tone_overrides(tones_root))
    spec = load_model(train_run.path / "model")[1]
    narrow = ModelSpec.from_dict({**spec.to_dict(), "kwargs": {**spec.kwargs, "channels": [12, 20]}})
    pruned = build_model(narrow)
    spec.shapes = record_shapes(pruned)  # as if Torch-Pruning had removed channels from the trained model
    spec.compression = [{"method": "taylor", "format": "fp32", "sparsity": 0.3}]
    with stage_run("prune", cfg, "tones-pruned", runs, force=True, parents=[train_run]) as prune_run:
        save_model(pruned, spec, prune_run.path / "model")
    run = _quantize_run(tones_root, tones_run, "quantize.method=static", name="tones-pruned-static", model=prune_run)
    reloaded, saved = load_model(run.path / "model")
    assert [s["method"] for s in saved.compression] == ["taylor", "static"]
    assert reloaded.backbone.get_submodule("0.0").weight().shape[0] == 12
