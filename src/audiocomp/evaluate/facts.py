"""Model facts measured by the program: parameters, non-zero parameters, MACs, file sizes, format.
The counts are defined in counts.py; :func:`model_facts` is what every stage reports about a model folder."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from ..models import build_model
from ..models.io import artifact_path
from .counts import count_macs, parameter_counts


def file_sizes(path: Path | str) -> dict[str, int]:
    """Bytes on disk, and bytes after DEFLATE (what a sparse model really saves when stored compressed)."""
    path = Path(path)
    raw = path.stat().st_size
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.write(path, arcname=path.name)
    return {"file_bytes": raw, "zipped_bytes": buf.getbuffer().nbytes}


def example_input(feature_shape, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, *feature_shape)


PRUNING_WORDS = ("prune", "magnitude", "taylor", "hybrid", "l1", "l2", "random", "sensitivity")


def format_facts(spec) -> dict:
    """Numeric format and compression steps from the model's recipe (spec.compression), e.g.
    {"format": "int8", "pruned": True, "compression": ["taylor", "static"]}."""
    steps = list(spec.compression or [])
    methods = [str(s.get("method", "?")) for s in steps]
    pruned = any(s.get("kind") == "prune" or "sparsity" in s or any(w in m.lower() for w in PRUNING_WORDS)
                 for s, m in zip(steps, methods))
    fmt = next((s["format"] for s in reversed(steps) if s.get("format")), "fp32")
    return {"format": fmt, "pruned": bool(pruned), "compression": methods}


def is_quantized(spec) -> bool:
    return bool(spec.compression) and spec.compression[-1].get("stage") == "quantize"


def architecture_macs(spec) -> int:
    """MACs per item of the spec's float architecture (pruned shapes included), run on the meta device:
    shapes only, no arithmetic, so even ResNet-152 at 299x299 is counted in a fraction of a second."""
    with torch.device("meta"):
        return count_macs(build_model(spec), example_input(spec.feature_shape))


def model_facts(spec, folder: Path | str) -> dict:
    """Measured facts of the model stored in `folder`: parameters, non-zeros and quantization parameters of
    its artifact (model.pt or model.onnx), file sizes, MACs of its architecture, format. A quantized model's
    MACs are those of the float architecture it was quantized from (same arithmetic, lower precision)."""
    path = artifact_path(folder, spec)
    where = "onnx initializers that feed layers" if path.suffix == ".onnx" else "state dict"
    facts = {**parameter_counts(path), "parameters_source": f"{path.name} ({where}): weight and bias elements; "
                                                            "scales and zero points apart, in quant_params"}
    facts.update(file_sizes(path))
    facts["macs"] = architecture_macs(spec)
    facts["macs_source"] = ("the float architecture it was quantized from" if is_quantized(spec) else
                            "the model's architecture") + "; conv, linear and recurrent layers"
    facts.update(format_facts(spec))
    return facts
