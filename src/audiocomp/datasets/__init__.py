"""Dataset adapters (registered by name) and splits. Importing this package registers them all."""
from . import audioset, esc50, folder, gtzan, manifest, synth, urbansound8k  # noqa: F401  (registration)
from .base import ADAPTERS, DatasetError, DatasetIndex, Item, load_index

__all__ = ["ADAPTERS", "DatasetError", "DatasetIndex", "Item", "load_index"]
