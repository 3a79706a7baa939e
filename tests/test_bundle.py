"""The device bundle (`export --target`): the model pinned to the target's opset and IR version, requirements
that cover what predict.py imports, the targets' refusals, the export: config section (CLI, pipeline), and the
agreement rules of scripts/verify_aarch64.sh."""
import ast
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from audiocomp.cli import app
from audiocomp.config import ConfigError, load_config
from audiocomp.deploy import agreement, bundle
from audiocomp.deploy.predict_onnx import OnnxClassifier
from audiocomp.runs import Run


def default_opset(model) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def third_party_imports(path) -> set[str]:
    """Top-level modules predict.py imports that the standard library does not provide."""
    import sys

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"}


def test_an_rpi4_bundle_from_the_export_section(trained_run):
    from audiocomp.stages import export

    runs, model_run, cfg = trained_run
    run = export.run(load_config([], ["export.target=rpi4"], base=cfg.to_dict()), model_run, runs, force=True)
    deploy = run.path / "deploy"
    from audiocomp.stages.naming import run_name

    x86 = run_name("export", cfg, [model_run.name])  # the target names the run: <stage>-<model>-<hash>
    assert run.name.startswith("export-cnn-") and run.name != x86 and run.metrics()["target"] == "rpi4"
    model = onnx.load(str(deploy / "model.onnx"))
    assert (model.ir_version, default_opset(model)) == (8, 17) and run.metrics()["max_abs_diff"] < 1e-4
    pins = [line for line in (deploy / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert all(line.count("==") == 1 for line in pins)
    assert {line.split("==")[0] for line in pins} == third_party_imports(deploy / "predict.py")
    info = json.loads((deploy / "bundle.json").read_text())
    assert info["target"] == "rpi4" and info["format"] == "fp32" and info["wheel_platform"].endswith("aarch64")
    readme = (deploy / "README.md").read_text()
    assert "pip install -r requirements.txt" in readme and "--stream" in readme and "onnxruntime 1.13" in readme
    assert f"`model.onnx` | {(deploy / 'model.onnx').stat().st_size / 1e3:.1f} kB" in readme


def test_a_jetson_nano_bundle_is_opset_13_ir_7_and_refuses_what_tensorrt_8_2_cannot_take(trained_run):
    from audiocomp.stages import export

    runs, model_run, cfg = trained_run
    jetson = load_config([], ["export.target=jetson-nano"], base=cfg.to_dict())
    run = export.run(jetson, model_run, runs, force=True)
    model = onnx.load(str(run.path / "deploy" / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert (model.ir_version, default_opset(model)) == (7, 13)
    assert run.metrics()["max_abs_diff"] < 1e-4  # the opset-13 graph still matches the torch model
    assert "trtexec --onnx=model.onnx --fp16" in (run.path / "deploy" / "README.md").read_text()
    with pytest.raises(ConfigError, match="opset 17"):
        export.run(jetson, model_run, runs, name="exp-jetson-fe", force=True, with_frontend=True)
    with pytest.raises(ConfigError, match="no INT8"):
        bundle.check_target("jetson-nano", with_frontend=False, int8=True)


def test_pinning_drops_unused_domains_and_lowers_the_ir_version(tmp_path):
    """What ONNX Runtime's quantizer leaves behind (IR 10, ai.onnx.ml 5 and other unused domains): pinned to the
    rpi4 target, the graph keeps only what its nodes use and still runs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 5),
                                                    helper.make_opsetid("com.microsoft", 1)], ir_version=10)
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    info = bundle.pin_model(path, bundle.TARGETS["rpi4"])
    pinned = onnx.load(str(path))
    assert [(o.domain, o.version) for o in pinned.opset_import] == [("", 17)] and pinned.ir_version == 8
    assert info == {"opset": 17, "ir_version": 8, "exported_opset": 17, "exported_ir_version": 10, "late_ops": []}
    import onnxruntime as ort

    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": np.array([[-1, 0, 2, -3]], np.float32)})
    assert out[0].tolist() == [[0, 0, 2, 0]]
    before = path.read_bytes()
    bundle.pin_model(path, bundle.TARGETS["rpi4"])
    assert path.read_bytes() == before  # already pinned: the file is left as it is


def test_a_dynamic_int8_convolution_raises_the_runtime_floor(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1, 2, 2])
    w = helper.make_tensor("w", TensorProto.INT8, [1, 1, 3, 3], [1] * 9)
    graph = helper.make_graph([helper.make_node("ConvInteger", ["x", "w"], ["y"])], "g", [x], [y], [w])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    pins = bundle.pin_model(path, bundle.TARGETS["rpi4"])
    assert pins["late_ops"] == ["ConvInteger"]
    assert "onnxruntime 1.24.1 or newer" in bundle.runtime_note(bundle.TARGETS["rpi4"], pins)


def test_cli_options_override_the_export_section(trained_run):
    runs, model_run, _ = trained_run
    invoke = lambda *a: CliRunner().invoke(app, ["export", "--from", str(model_run.path), "--runs-dir", str(runs),
                                                 "--force", *a])
    res = invoke("--set", "export.target=jetson-nano", "--target", "rpi4", "--name", "exp-cli")
    assert res.exit_code == 0, res.output
    assert "for rpi4 (opset 17, IR 8" in res.output
    assert json.loads((runs / "exp-cli" / "deploy" / "bundle.json").read_text())["target"] == "rpi4"
    res = invoke("--target", "pi5", "--name", "exp-bad")
    assert res.exit_code == 2 and "export.target" in res.output and "rpi4" in res.output


@pytest.mark.slow
def test_a_pipeline_exports_for_its_target(tmp_path, tiny_overrides):
    from audiocomp.stages import pipeline

    path = tmp_path / "p.yaml"
    path.write_text("""
stages:
  - {id: data, stage: prepare}
  - {id: fp32, stage: train, from: data}
  - {id: pi, stage: export, from: fp32, set: [export.target=rpi4, export.with_frontend=true]}
""")
    summary = pipeline.run(path, [*tiny_overrides, "train.epochs=1"], tmp_path / "runs", tmp_path / "out",
                           progress=False, quiet=True)
    run = Run(tmp_path / "runs" / {s["id"]: s["run"] for s in summary["stages"]}["pi"])
    m = run.metrics()
    assert m["target"] == "rpi4" and m["with_frontend"] and m["top1_agreement"] == 1.0
    assert OnnxClassifier(run.path / "deploy", 1).prep["input"] == "waveform"


# ------------------------------------------------------------------------------------------ agreement rules

def answers(tmp_path, name, rows):
    """predict.py --json lines: rows of (file, {label: probability}) or (file, "error message")."""
    path = tmp_path / name
    with open(path, "w") as fh:
        for f, probs in rows:
            if isinstance(probs, str):
                fh.write(json.dumps({"file": f, "error": probs}) + "\n")
            else:
                top = sorted(probs.items(), key=lambda kv: -kv[1])
                fh.write(json.dumps({"file": f, "top": [{"label": k, "score": v} for k, v in top]}) + "\n")
    return agreement.read_answers(path)


def test_float_rule_tolerates_near_ties_only(tmp_path):
    ref = answers(tmp_path, "x86", [("a", {"0": 0.9, "1": 0.1}), ("b", {"0": 0.50004, "1": 0.49996})])
    same = answers(tmp_path, "arm1", [("a", {"0": 0.90001, "1": 0.09999}), ("b", {"0": 0.49996, "1": 0.50004})])
    r = agreement.compare(ref, same, "fp32")
    assert r["pass"] and r["decisive_clips"] == 1 and r["top1_agree"] == 1 and r["disagreements"][0]["file"] == "b"
    assert r["max_abs_prob_diff"] == pytest.approx(8e-5)
    swapped = answers(tmp_path, "arm2", [("a", {"0": 0.4, "1": 0.6}), ("b", {"0": 0.50004, "1": 0.49996})])
    assert not agreement.compare(ref, swapped, "fp32")["pass"]
    drift = answers(tmp_path, "arm3", [("a", {"0": 0.8998, "1": 0.1002}), ("b", {"0": 0.50004, "1": 0.49996})])
    r = agreement.compare(ref, drift, "fp32")
    assert not r["pass"] and r["decisive_disagreements"] == 0 and r["max_abs_prob_diff"] > 1e-4


def test_int8_rule_needs_98_percent_and_counts_failures(tmp_path):
    files = [f"c{i}" for i in range(100)]
    ref = answers(tmp_path, "x86", [(f, {"0": 0.7, "1": 0.3}) for f in files])
    two_off = [(f, {"0": 0.3, "1": 0.7} if i < 2 else {"0": 0.69, "1": 0.31}) for i, f in enumerate(files)]
    r = agreement.compare(ref, answers(tmp_path, "arm1", two_off), "onnx-int8-static")
    assert r["pass"] and r["top1_agreement"] == 0.98
    three_off = [(f, {"0": 0.3, "1": 0.7} if i < 3 else {"0": 0.7, "1": 0.3}) for i, f in enumerate(files)]
    assert not agreement.compare(ref, answers(tmp_path, "arm2", three_off), "onnx-int8-static")["pass"]
    failed = [(f, "cannot decode" if i == 0 else {"0": 0.7, "1": 0.3}) for i, f in enumerate(files)]
    r = agreement.compare(ref, answers(tmp_path, "arm3", failed[1:] + [failed[0]]), "onnx-int8-static")
    assert not r["pass"] and r["failed"] == ["c0"]  # an error on the device side never passes
    r = agreement.compare(ref, answers(tmp_path, "arm4", [(f, {"0": 0.7, "1": 0.3}) for f in files[1:]]), "fp32")
    assert not r["pass"] and r["failed"] == ["c0"]  # nor does a missing answer


def test_verify_script_skips_with_a_reason_it_writes_down(tmp_path):
    """Exit 3 and {"skipped": reason} where emulation cannot run: here, a python without pip for the wheels."""
    import subprocess
    import venv
    from pathlib import Path

    venv.create(tmp_path / "nopip", with_pip=False)
    for f in ("bundle.json", "requirements.txt", "predict.py", "labels.json"):
        (tmp_path / f).write_text("{}")
    script = Path(__file__).resolve().parents[1] / "scripts" / "verify_aarch64.sh"
    out = subprocess.run(["bash", str(script), "--out", str(tmp_path / "r.json"), str(tmp_path), "clip.wav"],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": str(tmp_path / "nopip/bin/python")})
    assert out.returncode == 3, out.stderr
    reason = json.loads((tmp_path / "r.json").read_text())["skipped"]
    assert "has no pip" in reason and reason in out.stderr
