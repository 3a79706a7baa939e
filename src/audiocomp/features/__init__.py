"""Features: log-mel dB, MFCC and raw waveform; the on-disk feature store; a prepare run's data and its batches."""
from .extract import FeatureExtractor, feature_shape

__all__ = ["FeatureExtractor", "feature_shape"]
