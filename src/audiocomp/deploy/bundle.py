"""What `export --target` adds around model.onnx so that a device can run the folder on its own: the model's
ONNX opset and IR version pinned to what the device's runtime loads, requirements.txt pinned to releases
that publish wheels for the device, bundle.json (the facts a script needs) and README.md (the steps)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import ConfigError
from ..runs import RunError, atomic_path, atomic_write_json, atomic_write_text

# predict.py's dependencies. Each release publishes wheels for manylinux_2_28 aarch64 and x86_64, CPython
# 3.11 (Raspberry Pi OS Bookworm) and 3.13 (Trixie); scripts/verify_aarch64.sh checks both and installs them
# under emulated aarch64. Their own dependencies (cffi, protobuf, flatbuffers, ...) are left to pip.
REQUIREMENTS = ("numpy==2.4.6", "onnxruntime==1.32.0", "soundfile==0.14.0", "soxr==1.1.0")
# The oldest onnxruntime with CPython 3.11 wheels (x86_64 and aarch64); tests/realdata/test_aarch64.py runs
# an opset-17 / IR-8 bundle with it under aarch64 emulation.
OLDEST_TESTED_ONNXRUNTIME = "1.15.0"
# Operators whose onnxruntime kernel came later than the opset does, measured on emulated aarch64
# (scripts/verify_aarch64.sh --onnxruntime VERSION): ONNX Runtime's dynamic INT8 convolution.
LATE_OPS = {"ConvInteger": ("1.24.1", "ConvInteger with int8 weights (dynamic INT8 convolutions), which "
                                      "onnxruntime 1.23.2 and older cannot run")}


@dataclass(frozen=True)
class Target:
    name: str
    device: str
    opset: int  # default-domain ONNX opset of model.onnx
    ir_version: int  # ONNX IR version written into model.onnx
    runtime_floor: str  # the first runtime releases that implement (opset, IR), from their documentation
    python: str  # the interpreter the pins are for
    wheel_platform: str  # pip --platform of the device
    frontend: bool = True  # the in-graph front end needs opset 17 (STFT)
    int8: bool = True  # an ONNX Runtime INT8 model is allowed


TARGETS = {
    "x86": Target("x86", "an x86-64 Linux machine", 17, 8, "onnxruntime 1.13",
                  "CPython 3.11-3.13", "manylinux_2_28_x86_64"),
    "rpi4": Target("rpi4", "a Raspberry Pi 4 (Cortex-A72, 64-bit Raspberry Pi OS: Bookworm, Python 3.11; "
                   "Trixie, Python 3.13)", 17, 8, "onnxruntime 1.13", "CPython 3.11-3.13",
                   "manylinux_2_28_aarch64"),
    # TensorRT 8.2 (JetPack 4.6) parses ONNX up to opset 13 (onnx-tensorrt release/8.2-GA operators.md); the
    # Nano's Maxwell GPU (compute capability 5.3) has no INT8 in TensorRT: FP32 or FP16 engines only.
    "jetson-nano": Target("jetson-nano", "a Jetson Nano (JetPack 4.6: TensorRT 8.2, Python 3.6)", 13, 7,
                          "TensorRT 8.2 or onnxruntime 1.6", "CPython 3.11-3.13, not JetPack 4.6's 3.6",
                          "manylinux_2_28_aarch64", frontend=False, int8=False),
}


def check_target(name: str, with_frontend: bool, int8: bool) -> Target:
    """The target, or a ConfigError naming what it cannot carry and what to do instead."""
    target = TARGETS[name]
    if with_frontend and not target.frontend:
        raise ConfigError(f"export.target={name}: the in-graph front end needs ONNX opset 17 (STFT), newer than "
                          f"TensorRT 8.2 parses (opset 13); export without --with-frontend "
                          "(predict.py then computes the log-mel in numpy)")
    if int8 and not target.int8:
        raise ConfigError(f"export.target={name}: the Jetson Nano's GPU (compute capability 5.3) has no INT8 in "
                          "TensorRT; export the float parent and build an FP16 engine (trtexec --fp16)")
    return target


def pin_model(path: Path, target: Target) -> dict:
    """Lower model.onnx to the target's opset (onnx's version converter) and IR version, drop opset imports of
    domains no node uses, check the result; the file is rewritten only if something changed. Our graphs use
    float32/int8/uint8 tensors only, which IR 7 already has, so lowering the IR number is exact, and
    onnx.checker confirms a valid model of that IR and opset."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    before = model.SerializeToString()
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset > target.opset:
        try:
            model = version_converter.convert_version(model, target.opset)
        except Exception as exc:
            raise RunError(f"{path}: cannot lower opset {opset} to {target.opset} for {target.name} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    # ONNX Runtime's graph optimiser stamps quantized models with every domain it knows (ai.onnx.ml 5, ...),
    # and onnx.compose lists the default domain twice: an older runtime may refuse a domain version it does not
    # know even when no node uses it
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    if not any(a.g.node or a.graphs for n in model.graph.node for a in n.attribute) and not model.functions:
        kept = {o.domain: o for o in reversed(model.opset_import) if o.domain in used}  # first one wins
        del model.opset_import[:]
        model.opset_import.extend(kept.values())
    exported_ir = model.ir_version
    model.ir_version = min(model.ir_version, target.ir_version)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise RunError(f"{path}: not a valid IR {model.ir_version} / opset {target.opset} model after pinning "
                       f"({str(exc).splitlines()[0][:160]})") from None
    if model.SerializeToString() != before:
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
    return {"opset": min(opset, target.opset), "ir_version": model.ir_version, "exported_opset": opset,
            "exported_ir_version": exported_ir, "late_ops": sorted({n.op_type for n in model.graph.node} & set(LATE_OPS))}


def requirements(target: Target) -> str:
    head = (f"# predict.py's dependencies for {target.device}.\n"
            f"# Pinned releases with wheels for {target.wheel_platform}, {target.python}.\n")
    return head + "\n".join(REQUIREMENTS) + "\n"


def readme(target: Target, fmt: str, prep: dict, files: dict[str, int], pins: dict) -> str:
    """The device's README: what is in the folder and the steps to run it there."""
    sizes = "\n".join(f"| `{name}` | {size / 1e3:.1f} kB |" for name, size in sorted(files.items()))
    audio_in = prep["input"] == "waveform"
    rate = prep["sample_rate"]
    lines = [
        f"# audiocomp bundle for {target.device}",
        "",
        f"Model: `{prep['model_file']}` ({fmt}, ONNX opset {pins['opset']}, IR version {pins['ir_version']}), "
        f"{'raw audio in (log-mel front end inside the graph)' if audio_in else 'log-mel features in (computed by predict.py in numpy)'}; "
        f"{prep['sample_rate']} Hz mono, {prep['duration']} s windows. Labels in `labels.json`, preprocessing in "
        "`preprocessing.json`.",
        "",
        "| File | Size |", "|---|---|", sizes,
        "",
    ]
    if target.name == "jetson-nano":
        lines += [
            "## On the Jetson Nano (not verified here)",
            "",
            "JetPack 4.6 ships Python 3.6 and TensorRT 8.2; `predict.py` and the pinned wheels need Python >= 3.11, "
            f"so run the model through TensorRT. `model.onnx` is pinned to opset {pins['opset']} and IR "
            f"{pins['ir_version']}, which TensorRT 8.2's ONNX parser reads:",
            "",
            "```",
            "/usr/src/tensorrt/bin/trtexec --onnx=model.onnx --fp16 --saveEngine=model.plan \\",
            f"    --minShapes=features:1x{'x'.join(map(str, prep['input_shape'][1:]))} "
            f"--optShapes=features:1x{'x'.join(map(str, prep['input_shape'][1:]))} "
            f"--maxShapes=features:8x{'x'.join(map(str, prep['input_shape'][1:]))}",
            "```",
            "",
            "The engine takes log-mel features: compute them as `predict.py`'s `log_mel` does (numpy, "
            "`mel_basis.npy`, parameters in `preprocessing.json`). The Nano's GPU has no INT8 in TensorRT, hence "
            "a float model and an FP16 engine. None of this was run on a Jetson: it follows NVIDIA's documented "
            "limits (TensorRT 8.2 parses up to opset 13).",
            "",
            "On any aarch64 Linux with Python >= 3.11 (a Raspberry Pi, or a Jetson with a newer Python) the folder "
            "runs as it is: `pip install -r requirements.txt`, then `python predict.py . clip.wav`.",
        ]
    else:
        lines += [
            "## Run it",
            "",
            "```",
            f"scp -r bundle/ {'pi@raspberrypi' if target.name == 'rpi4' else 'user@device'}:audiocomp-bundle/   # copy the folder",
            "cd audiocomp-bundle",
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
            ".venv/bin/python predict.py . clip.wav recordings/ --top-k 3 --json   # files",
            f"arecord -f S16_LE -r 16000 -c 1 | .venv/bin/python predict.py . --stream --rate 16000   # live",
            "```",
            "",
            f"`--stream` reads raw S16_LE PCM (`--rate`, `--channels`) from standard input, resamples it to {rate} Hz "
            f"and classifies a {prep['duration']} s window every `--hop` seconds (one line, or JSON with `--json`, per "
            "window, with its processing time); at the end it prints the real-time factor on standard error.",
            "`--threads N` sets onnxruntime's threads (0, the default, uses every core; a small model often runs "
            "fastest on 1).",
        ]
    lines += [
        "",
        "## Runtime versions",
        "",
        f"`requirements.txt` pins releases that publish wheels for {target.wheel_platform} ({target.python}). "
        + runtime_note(target, pins),
        "",
        "To check this folder on the Pi's architecture without a Pi: `scripts/verify_aarch64.sh BUNDLE CLIPS...` "
        "in the audiocomp repository runs it on an emulated aarch64 (Debian 12, Python 3.11, QEMU user mode as a "
        "Cortex-A72) with these wheels and compares every answer with x86-64 (audiocomp's tests do so for FSDD "
        "bundles). Emulation shows the answers, not the speed: time it on the device.",
        "",
    ]
    return "\n".join(lines)


def runtime_note(target: Target, pins: dict) -> str:
    model = f"`model.onnx` (opset {pins['opset']}, IR {pins['ir_version']})"
    if pins["late_ops"]:
        version, why = LATE_OPS[pins["late_ops"][0]]
        return (f"{model} holds {why}: it needs onnxruntime {version} or newer (measured under aarch64 "
                "emulation).")
    return (f"{model} needs {target.runtime_floor} or newer, the first release(s) to implement both. The oldest "
            f"onnxruntime run here on an opset-17, IR-8 bundle is {OLDEST_TESTED_ONNXRUNTIME} (the oldest with "
            "CPython 3.11 wheels), under aarch64 emulation.")


def write(deploy: Path, target_name: str, fmt: str, prep: dict) -> dict:
    """Pin model.onnx for the target and write requirements.txt, bundle.json and README.md into `deploy`.
    Returns bundle.json's content."""
    target = TARGETS[target_name]
    pins = pin_model(deploy / prep["model_file"], target)
    atomic_write_text(deploy / "requirements.txt", requirements(target))
    info = {"target": target.name, "device": target.device, "format": fmt, **pins,
            "runtime": runtime_note(target, pins),
            "requirements": list(REQUIREMENTS), "wheel_platform": target.wheel_platform, "python": target.python}
    atomic_write_json(deploy / "bundle.json", info)
    files = {p.name: p.stat().st_size for p in deploy.iterdir() if p.is_file() and p.name != "README.md"}
    atomic_write_text(deploy / "README.md", readme(target, fmt, prep, files, pins))
    return info
