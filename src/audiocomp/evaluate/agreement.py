"""Does a deployed graph compute what it should? Its logits against a reference model's on the same items.

A float graph must reproduce its own model almost exactly. An INT8 graph is compared with its FLOAT PARENT
(the model before quantization), never with itself: it may round differently, but it must pick the same
class on nearly every item AND keep its logits close. A broken quantization (a wrong scale, a collapsed layer)
fails at least one of the two; a wrong scale late in the network may keep the classes and fail only the second."""
from __future__ import annotations

from typing import Optional

import numpy as np

FLOAT_TOLERANCE = 1e-3  # max |logit difference| / max(1, max |logit|): the same arithmetic, reordered
# INT8 vs float parent, from `python scripts/bench_int8_check.py` (README, "Export"): ONNX Runtime dynamic and
# static INT8 of CNNs and LSTMs trained on FSDD and synthetic audio agreed on 100% of 64 items with a relative
# logit error of 0.004-0.014; with one weight scale multiplied by 50 the error was 0.40-121 (agreement 19-100%,
# so the agreement rule alone would pass some). 0.25 (an output SQNR of 12 dB) sits far from both.
INT8_MIN_TOP1_AGREEMENT = 0.9
INT8_MAX_RELATIVE_ERROR = 0.25  # ||int8 logits - float logits|| / ||float logits|| over all items and classes


def onnx_quantized(spec) -> bool:
    """The model is an ONNX Runtime INT8 graph: its outputs are checked against its float parent."""
    step = spec.compression[-1] if spec.compression else {}
    return step.get("stage") == "quantize" and step.get("backend") == "onnxruntime"


def logit_agreement(got: np.ndarray, reference: np.ndarray) -> dict:
    """(items, classes) logits of the graph and of its reference."""
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    diff = got - reference
    return {"max_abs_diff": float(np.abs(diff).max()), "max_abs_logit": float(np.abs(reference).max()),
            "relative_logit_error": float(np.linalg.norm(diff) / max(np.linalg.norm(reference), 1e-12)),
            "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean())}


def verify(got: np.ndarray, reference: np.ndarray, int8: bool,
           tolerance: float = FLOAT_TOLERANCE) -> tuple[dict, Optional[str]]:
    """(measurements with the rule applied, None or what failed)."""
    m = logit_agreement(got, reference)
    if int8:
        m.update(rule="int8 vs float parent", min_top1_agreement=INT8_MIN_TOP1_AGREEMENT,
                 max_relative_logit_error=INT8_MAX_RELATIVE_ERROR)
        if m["top1_agreement"] < INT8_MIN_TOP1_AGREEMENT or m["relative_logit_error"] > INT8_MAX_RELATIVE_ERROR:
            return m, (f"INT8 graph vs its float parent: top-1 agreement {m['top1_agreement']:.1%} (needs >= "
                       f"{INT8_MIN_TOP1_AGREEMENT:.0%}), relative logit error {m['relative_logit_error']:.3g} "
                       f"(allowed {INT8_MAX_RELATIVE_ERROR})")
        return m, None
    m.update(rule="float vs the model", tolerance=tolerance * max(1.0, m["max_abs_logit"]))
    if m["max_abs_diff"] > m["tolerance"]:
        return m, (f"differs from the original by {m['max_abs_diff']:.3g} (max |logit| {m['max_abs_logit']:.3g}, "
                   f"allowed {m['tolerance']:.3g})")
    return m, None
