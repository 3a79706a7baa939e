"""`audiocomp doctor`: what in this environment works and what does not, before a long run finds out.

Each check gives ok / warn / fail. Only `fail` on an essential check (core packages, the CPU, decoding
WAV, writing to the runs dir) makes the environment unusable; a missing GPU or MP3 support is a warning.
"""
from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

CHECKED = ("torch", "torchvision", "torchaudio", "onnxruntime", "torch-pruning", "numpy", "scipy", "soxr",
           "soundfile", "onnx")
ESSENTIAL = {"torch", "numpy", "soundfile"}
MIN_FREE_BYTES = 1 << 30  # below 1 GiB free a training run with checkpoints may not finish


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    essential: bool = False


def _pins() -> dict[str, str]:
    """The version specifiers audiocomp declares for its dependencies ('torch' -> '==2.11.0')."""
    from packaging.requirements import Requirement

    pins = {}
    with contextlib.suppress(metadata.PackageNotFoundError):
        for line in metadata.requires("audiocomp") or []:
            req = Requirement(line)
            if req.marker is None:
                pins[req.name.lower()] = str(req.specifier)
    return pins


def package_checks() -> list[Check]:
    from packaging.specifiers import SpecifierSet

    pins = _pins()
    out = [Check("python", "ok", platform.python_version(), essential=True)]
    for name in CHECKED:
        essential = name in ESSENTIAL
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            out.append(Check(name, "fail" if essential else "warn", "not installed", essential))
            continue
        spec = pins.get(name, "")
        if spec and not SpecifierSet(spec).contains(version, prereleases=True):
            out.append(Check(name, "warn", f"{version} does not match the pin {name}{spec}", essential))
        else:
            out.append(Check(name, "ok", f"{version}" + (f" (pin {spec})" if spec else ""), essential))
    return out


def device_checks() -> list[Check]:
    import torch

    out = [Check("device cpu", "ok", f"{os.cpu_count()} cores, {torch.get_num_threads()} torch threads", True)]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        out.append(Check("device cuda", "ok", names))
    else:
        out.append(Check("device cuda", "warn", "not available (training runs on the CPU)"))
    mps = getattr(torch.backends, "mps", None)
    out.append(Check("device mps", "ok" if mps is not None and mps.is_available() else "warn",
                     "available" if mps is not None and mps.is_available() else "not available"))
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    out.append(Check("quantized engines", "ok" if engines else "warn",
                     ", ".join(engines) if engines else "none: torch INT8 backends will not run"))
    return out


def onnxruntime_check() -> Check:
    try:
        import onnxruntime as ort
    except Exception as exc:  # an import failure of a native library is not always ImportError
        return Check("onnxruntime providers", "warn", f"cannot import onnxruntime ({type(exc).__name__}: {exc})")
    return Check("onnxruntime providers", "ok", ", ".join(ort.get_available_providers()))


def audio_checks() -> list[Check]:
    import numpy as np
    import soundfile as sf

    formats = sf.available_formats()
    out = [Check("libsndfile", "ok", f"{sf.__libsndfile_version__}: {', '.join(sorted(formats))}")]
    with tempfile.TemporaryDirectory() as tmp:  # a real round trip, not just a version string
        for fmt, essential in (("WAV", True), ("FLAC", False), ("OGG", False), ("MP3", False)):
            if fmt not in formats:
                out.append(Check(f"decode {fmt}", "fail" if essential else "warn", "not supported by libsndfile", essential))
                continue
            path = Path(tmp) / f"x.{fmt.lower()}"
            try:
                sf.write(str(path), np.zeros(800, np.float32), 8000, format=fmt)
                y, _ = sf.read(str(path))
                out.append(Check(f"decode {fmt}", "ok", f"write+read {len(y)} samples", essential))
            except Exception as exc:
                out.append(Check(f"decode {fmt}", "fail" if essential else "warn", f"{type(exc).__name__}: {exc}", essential))
    return out


def runs_dir_checks(runs_dir: Path) -> list[Check]:
    """Free space and write permission where runs go; creates nothing that stays."""
    existing = Path(runs_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    out = [Check("free disk", "ok" if free >= MIN_FREE_BYTES else "warn",
                 f"{free / 2 ** 30:.1f} GiB free at {existing}")]
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".audiocomp-doctor-"):
            pass
        out.append(Check("write runs dir", "ok", f"{runs_dir} is writable" +
                         ("" if existing == Path(runs_dir).absolute() else f" (created on first run under {existing})"), True))
    except OSError as exc:
        out.append(Check("write runs dir", "fail", f"cannot write in {existing} ({exc.strerror})", True))
    return out


def run(runs_dir: Path) -> tuple[list[Check], bool]:
    """All checks; the second value is True when audiocomp can run here (no essential check failed)."""
    checks = package_checks()
    sections: list[Callable[[], list[Check] | Check]] = [device_checks, onnxruntime_check, audio_checks,
                                                          lambda: runs_dir_checks(runs_dir)]
    for section in sections:
        try:
            result = section()
        except Exception as exc:  # one broken library must not hide the rest of the report
            result = Check(getattr(section, "__name__", "check"), "fail", f"{type(exc).__name__}: {exc}", True)
        checks.extend(result if isinstance(result, list) else [result])
    usable = not any(c.status == "fail" and c.essential for c in checks)
    return checks, usable
