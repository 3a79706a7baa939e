"""Dataset adapters (registered by name) and splits. Importing this package registers them all."""
from . import folder, synth  # noqa: F401  (registration side effects)
from .base import ADAPTERS, DatasetError, DatasetIndex, Item, load_index

__all__ = ["ADAPTERS", "DatasetError", "DatasetIndex", "Item", "load_index"]
