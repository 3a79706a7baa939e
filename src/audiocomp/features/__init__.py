"""Features: log-mel dB, MFCC and raw waveform; normalisation statistics; the on-disk feature store."""
from .extract import FeatureExtractor, feature_shape

__all__ = ["FeatureExtractor", "feature_shape"]
