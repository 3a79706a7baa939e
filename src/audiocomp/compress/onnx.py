"""ONNX export of float models and ONNX Runtime sessions (the portable path to ARM and x86 devices)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.io import ModelLoadError
from ..runs import atomic_copy, atomic_path

OPSET = 17  # STFT (for the optional mel front end) needs opset 17


def export_onnx(model: nn.Module, feature_shape, path: Path | str, opset: int = OPSET) -> Path:
    """Export `model` (input (B, *feature_shape), dynamic batch) to `path`, atomically."""
    model = model.eval()
    example = torch.randn(1, *feature_shape)
    with atomic_path(path) as tmp:
        torch.onnx.export(model, (example,), str(tmp), input_names=["features"], output_names=["logits"],
                          dynamic_axes={"features": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return Path(path)


def compact_names(path: Path | str) -> int:
    """Rewrite the ONNX graph at `path` (atomically) with short internal tensor names and no node names or doc
    strings; the graph's inputs and outputs keep theirs, and the computation is unchanged. ONNX Runtime's QDQ
    graphs carry long generated names that no runtime reads: about 12 KB of a 113 KB INT8 CNN. Graphs with
    subgraphs (If, Loop) are left as they are. Returns the bytes saved."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return 0
    kept = {v.name for v in (*graph.input, *graph.output)}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in kept:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for t in graph.initializer:
        t.name = short(t.name)
    for v in graph.value_info:
        v.name = short(v.name)
    for n in graph.node:
        n.input[:] = [short(i) for i in n.input]
        n.output[:] = [short(o) for o in n.output]
        n.name, n.doc_string = "", ""
    model.doc_string = graph.doc_string = ""
    before = path.stat().st_size
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return before - path.stat().st_size


def session(path: Path | str, threads: int = 0):
    """An onnxruntime CPU session; threads=0 lets onnxruntime use all cores."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_session(sess, x: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: np.asarray(x, dtype=np.float32)})[0]


def model_onnx(model, spec, folder: Path, path: Path, opset: int = OPSET) -> None:
    """The model's ONNX graph at `path`: the compression step's ONNX artifact if it has one, else exported
    (at `opset`)."""
    step = spec.compression[-1] if spec.compression else {}
    artifact = folder / step.get("artifact", "") if step.get("artifact") else None
    if artifact is not None and artifact.suffix == ".onnx" and artifact.is_file():
        atomic_copy(artifact, path)
        return
    if step.get("stage") == "quantize" and step.get("backend") == "torch":  # the exporter mistraces these
        raise ModelLoadError(f"{folder}: a torch-quantized model ({step.get('format')}) does not export to ONNX; "
                             "export its float parent, or quantize with quantize.backend=onnxruntime for a "
                             "portable INT8 model")
    try:
        export_onnx(model, spec.feature_shape, path, opset)
    except Exception as exc:
        raise ModelLoadError(f"{folder}: cannot export this model to ONNX ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160]}); export the float parent and quantize with "
                             "onnxruntime instead") from None
