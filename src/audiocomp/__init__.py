"""audiocomp: audio classification experiments under edge constraints."""
__version__ = "0.1.0"


def load_model(folder):
    """(model, spec) of any model folder (`<run>/model`): float, pruned or quantized in any format; the
    model takes float32 features (B, *spec.feature_shape) and returns logits."""
    from . import compress  # noqa: F401  (registers the loaders of compressed formats)
    from .models import load_model as load

    return load(folder)
