"""Typed configuration: YAML files with `include:`, merged in order, plus `--set key=value` overrides.

Every section is a pydantic model with ``extra="forbid"`` so that a misspelled key is an error, not a
silently ignored setting. Errors name the file that set the bad key, the key path, the value and what
is allowed, in one line (see :class:`ConfigError`).
"""
from .loading import ConfigError, deep_merge, load_config, parse_override, read_yaml, validate
from .sections import (UNHASHED, AugmentConfig, BenchConfig, CompressConfig, Config, DataConfig, DistillConfig,
                       EvalConfig, ExportConfig,
                       FeaturesConfig, IntervalConfig, ModelConfig, PruneConfig, QuantizeConfig, ReportConfig,
                       Section, SplitConfig, SynthConfig, TrackingConfig, TrainConfig, stable_hash)

__all__ = ["UNHASHED", "AugmentConfig", "BenchConfig", "CompressConfig", "Config", "ConfigError", "DataConfig",
           "DistillConfig", "EvalConfig",
           "ExportConfig", "FeaturesConfig", "IntervalConfig", "ModelConfig", "PruneConfig", "QuantizeConfig",
           "ReportConfig", "Section", "SplitConfig", "SynthConfig", "TrackingConfig", "TrainConfig", "deep_merge",
           "load_config", "parse_override", "read_yaml", "stable_hash", "validate"]
