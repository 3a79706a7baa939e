"""Latency, throughput, fresh-process memory and cold start, plus the facts that make numbers comparable
(CPU model, cores, versions, threads). Every number is measured here; nothing is estimated."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .latency import spread, time_calls

# Thread counts and batch sizes of a device; measured on THIS machine, never claimed as the device's numbers.
DEVICE_PROFILES = {
    "rpi4": {"threads": [1, 4], "batch_sizes": [8], "note": "Raspberry Pi 4 (4x Cortex-A72) thread/batch preset"},
    "jetson-nano": {"threads": [1, 4], "batch_sizes": [8], "note": "Jetson Nano (4x Cortex-A57) thread/batch preset; "
                    "its GPU path is TensorRT from the ONNX file"},
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def system_info() -> dict:
    import psutil

    versions = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "onnxruntime", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {"cpu": cpu_model(), "machine": platform.machine(), "platform": platform.platform(),
            "logical_cores": psutil.cpu_count(logical=True), "physical_cores": psutil.cpu_count(logical=False),
            "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}, "versions": versions}


def measure(call: Callable[[np.ndarray], object], item: np.ndarray, batch_sizes: list[int], warmup: int,
            iterations: int) -> dict:
    """Latency at batch 1 and throughput (items/s, from the median batch time) at each batch size."""
    one = item[None]
    result = {"latency": spread(time_calls(lambda: call(one), warmup, iterations)), "throughput": {}}
    for n in batch_sizes:
        batch = np.repeat(one, n, axis=0)
        times = spread(time_calls(lambda: call(batch), min(warmup, 2), max(3, iterations // 4)))
        result["throughput"][str(n)] = {"items_per_s": n / (times["median_ms"] / 1e3), "batch": times}
    return result


def fresh_process(runtime: str, model: str, input_npy: Path, threads: int) -> dict:
    """Peak resident memory (interpreter + libraries + model + one inference, see probe.py) and cold start
    (process start to first prediction) of a new Python process."""
    cmd = [sys.executable, "-m", "audiocomp.evaluate.probe", runtime, str(model), str(input_npy), str(threads)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    src = str(Path(__file__).resolve().parents[2])  # this checkout's audiocomp, not another install
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else src
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, env=env)
    wall = time.time() - t0
    out, err = proc.stdout, proc.stderr
    if proc.returncode != 0:
        return {"error": (err.decode(errors="replace").strip().splitlines() or ["failed"])[-1][:300]}
    probe = json.loads(out.decode().strip().splitlines()[-1])
    return {"peak_rss_mb": probe["peak_rss_kb"] / 1024, "cold_start_s": probe["first_prediction_at"] - t0,
            "process_wall_s": wall, "threads": threads}


PREDICT_WRAPPER = """import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
hwm = [l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")]
print("PEAK_RSS_KB", hwm[0] if hwm else -1, "TORCH" if "torch" in sys.modules else "NO-TORCH", code, file=sys.stderr)
"""


def predict_process(deploy_dir: Path, clip: Path) -> dict:
    """Wall time and peak memory of a fresh `python predict.py DIR CLIP` (the device path: numpy, soundfile,
    onnxruntime), start-up included."""
    script = Path(deploy_dir) / "predict.py"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PREDICT_WRAPPER, str(script), str(deploy_dir), str(clip), "--json"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    wall = time.perf_counter() - t0
    tail = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    if not tail or proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    _, kb, torch_flag, code = tail[-1].split()
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": int(kb) / 1024, "imported_torch": torch_flag == "TORCH",
            "exit_code": int(code) if code.lstrip("-").isdigit() else code, "windows": len(answer.get("windows", [])),
            "top": answer.get("top", [])[:1]}
