"""The package declares what it imports, and nothing its code paths do not load (onnxscript)."""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def declared() -> set[str]:
    """The dependencies, plus the optional extras the package imports lazily (ray, mlflow, ...): not `test`."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for name, reqs in project["optional-dependencies"].items() if name != "test" for r in reqs]
    return {Requirement(r).name.lower() for r in [*project["dependencies"], *extras]}


def imported_modules() -> set[str]:
    mods = set()
    for path in (REPO / "src" / "audiocomp").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "audiocomp"}


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    missing = {m: dists.get(m) for m in imported_modules()
               if not {d.lower() for d in dists.get(m, [m])} & declared()}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_export_and_onnxruntime_quantization_do_not_load_onnxscript(tmp_path):
    """torch.onnx.export(dynamo=False) is the TorchScript exporter: onnxscript is not a dependency."""
    code = f"""
import sys
sys.modules["onnxscript"] = None  # importing it now raises ImportError
import torch
from pathlib import Path
from audiocomp.compress import quantization as q
from audiocomp.compress.onnx import export_onnx
from audiocomp.config import QuantizeConfig, load_config
from audiocomp.models import ModelSpec, build_model
from audiocomp.stages.export import add_frontend
out = Path({str(tmp_path)!r})
spec = ModelSpec("lstm", 4, [1, 32, 63], {{"hidden_size": 8}})
calib = [(torch.randn(4, 1, 32, 63), torch.zeros(4, dtype=torch.long))]
q.quantize(build_model(spec), spec, calib, QuantizeConfig(backend="onnxruntime", method="static"), out / "q")
spec = ModelSpec("cnn", 4, [1, 32, 63], {{"channels": [4, 8]}})
path = export_onnx(build_model(spec), spec.feature_shape, out / "cnn.onnx")
feats = load_config([], ["features.sample_rate=8000", "features.n_fft=256", "features.hop_length=128",
                         "features.n_mels=32", "features.duration=1.0"]).features
add_frontend(path, feats, 8000)
print("exported without onnxscript")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exported without onnxscript" in result.stdout
