"""Fresh-process probe: load a model, classify one clip, report peak memory and time to first prediction.

Run as `python -m audiocomp.evaluate.probe RUNTIME MODEL INPUT.npy THREADS`. The onnxruntime path imports
only numpy and onnxruntime (what a device would load); the torch paths import torch and audiocomp's model
code. Prints one JSON line with the time of the first prediction (the parent knows the start time) and the
peak resident memory: VmHWM of this process's own address space on Linux. Not ru_maxrss: Linux carries the
parent's high-water mark across fork+exec, so a child of a big process would report the parent's size."""
from __future__ import annotations

import json
import resource
import sys
import time


def main(runtime: str, model: str, input_path: str, threads: int) -> dict:
    import numpy as np

    x = np.load(input_path)[None].astype(np.float32)  # (1, *feature_shape)
    t_import = time.time()
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        logits = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    else:
        import torch

        torch.set_num_threads(threads or torch.get_num_threads())
        if runtime == "torchscript":
            net = torch.jit.load(model, map_location="cpu")
        else:
            from audiocomp import load_model

            net, _ = load_model(model)
        with torch.no_grad():
            logits = net(torch.from_numpy(x)).numpy()
    return {"first_prediction_at": time.time(), "import_started_at": t_import,
            "prediction": int(np.argmax(logits)), "peak_rss_kb": peak_rss_kb()}


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux; elsewhere an upper bound


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))))
