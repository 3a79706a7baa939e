"""Model facts measured by the program: parameters, non-zero parameters, MACs, file sizes, format."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch
from torch import nn


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Dense and non-zero parameter counts. Models whose weights are not nn.Parameters (torch-quantized
    ones) are counted over their weight tensors, through the int representation; a model that is not
    made of torch tensors (an ONNX Runtime session) counts its own."""
    if hasattr(model, "parameter_counts"):
        return model.parameter_counts()
    tensors = [p.detach() for p in model.parameters()]
    if not tensors:
        tensors = [t for k, t in model.state_dict().items() if isinstance(t, torch.Tensor)
                   and (t.is_quantized or t.is_floating_point()) and k.rsplit(".", 1)[-1] in ("weight", "bias")]
    values = [t.int_repr() if t.is_quantized else t for t in tensors]
    return {"parameters": sum(v.numel() for v in values), "nonzero": sum(int(torch.count_nonzero(v)) for v in values)}


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on `example`, counted by Torch-Pruning's op counter."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs)


def onnx_parameter_counts(path: Path | str) -> dict[str, int]:
    """Elements and non-zero elements of an ONNX graph's initializers with more than one element: the
    weights (and, for a quantized graph, its per-channel scales and zero points)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    arrays = [a for a in arrays if a.size > 1]
    return {"parameters": int(sum(a.size for a in arrays)), "nonzero": int(sum(np.count_nonzero(a) for a in arrays))}


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
