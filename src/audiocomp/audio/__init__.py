"""Audio I/O and pure signal helpers: decode (soundfile), mono, resample (soxr), fix length."""
from .io import AudioError, decode, fix_length, load, load_fixed, resample, segments, to_mono

__all__ = ["AudioError", "decode", "load", "load_fixed", "resample", "to_mono", "fix_length", "segments"]
