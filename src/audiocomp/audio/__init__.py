"""Audio I/O and pure signal helpers: decode (soundfile), mono, resample (soxr), fix length."""
from .io import AudioError, decode, load, resample, to_mono, fix_length, segments

__all__ = ["AudioError", "decode", "load", "resample", "to_mono", "fix_length", "segments"]
